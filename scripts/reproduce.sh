#!/usr/bin/env bash
# Re-run the reproductions (seven experiments; more than one preset where a paper's claims need it) and regenerate docs/reproductions/ (reports, figures, summary.json)
# and the verdict tables of README.md and docs/reproductions/README.md, which come from the
# summaries alone (`python -m jaxlab.reproductions`). About 2 hours on a quiet 2-core CPU.
#   bash scripts/reproduce.sh [OUT]     # runs go to OUT (default runs/reproductions)
#   ONLY="steerability latent-ambiguity" bash scripts/reproduce.sh   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/reproductions}
JAXLAB=${JAXLAB:-.venv/bin/jaxlab}
PY=${PY:-.venv/bin/python}
# folder under docs/reproductions/ -> the command's arguments (experiment first)
declare -A ARGS=(
  [icl-regression]="icl-regression --preset paper --seeds 8"
  [icl-regression-recurrent]="icl-regression --preset recurrent --seeds 8"
  [icl-regression-deep]="icl-regression --preset deep --seeds 8"
  [icl-regression-depth]="icl-regression --preset depth"
  [icl-regression-depth-noisy]="icl-regression --preset depth-noisy"
  [icl-autoregressive]="icl-autoregressive --preset augmented-commuting --seeds 8"
  [icl-autoregressive-non-augmented]="icl-autoregressive --preset non-augmented --seeds 8"
  [icl-autoregressive-pe-only]="icl-autoregressive --preset pe-only --seeds 8"
  [instruction-clustering]="instruction-clustering --preset quick"
  [steerability]="steerability --preset quick"
  [latent-ambiguity]="latent-ambiguity --preset quick --seeds 5"
  [latent-ambiguity-paper-small]="latent-ambiguity --preset paper-small"
  [representation-dissimilarity]="representation-dissimilarity --preset quick --seeds 5"
  [function-classes]="function-classes --preset quick"
  [function-classes-sparse-3x]="function-classes --preset quick --sweep task.function_class=sparse_linear --set train.steps=12000 --set train.eval_every=1500"
)
NAMES=${ONLY:-icl-regression icl-regression-recurrent icl-regression-deep icl-regression-depth icl-regression-depth-noisy icl-autoregressive icl-autoregressive-non-augmented icl-autoregressive-pe-only instruction-clustering steerability latent-ambiguity representation-dissimilarity function-classes function-classes-sparse-3x}
NAMES=${ONLY:-$NAMES latent-ambiguity-paper-small}  # Jiang's own language and ICL metric (about 7 minutes)
mkdir -p "$OUT"
for name in $NAMES; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$JAXLAB" run ${ARGS[$name]} --out "$OUT/$name" --overwrite --quiet
  echo "$name: $(( $(date +%s) - start )) s"
  dest=docs/reproductions/$name
  mkdir -p "$dest"
  rm -f "$dest"/*.png "$dest"/report.md "$dest"/summary.json
  cp "$OUT/$name"/report.md "$OUT/$name"/summary.json "$dest"/
  cp "$OUT/$name"/*.png "$dest"/ 2>/dev/null || true
done
"$PY" -m jaxlab.reproductions
