#!/usr/bin/env bash
# Re-run every stored reproduction (seven experiments; more than one preset where a paper's claims need it) and
# regenerate docs/reproductions/ (reports, figures, summary.json)
# and the verdict tables of README.md and docs/reproductions/README.md, which come from the
# summaries alone (`python -m jaxlab.reproductions`). About 9 hours on a 2-core CPU (the tables' walls add up to 8.8 h); pick some with ONLY.
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
  [icl-regression-recurrent-context]="icl-regression --preset recurrent-context --seeds 8"
  [icl-regression-softmax]="icl-regression --preset softmax --seeds 8"
  [icl-regression-softmax-mlp]="icl-regression --preset softmax-mlp --seeds 8"
  [icl-regression-depth]="icl-regression --preset depth"
  [icl-regression-depth-noisy]="icl-regression --preset depth-noisy"
  [icl-autoregressive]="icl-autoregressive --preset augmented-commuting --seeds 8"
  [icl-autoregressive-non-augmented]="icl-autoregressive --preset non-augmented --seeds 8"
  [icl-autoregressive-pe-only]="icl-autoregressive --preset pe-only --seeds 8"
  [icl-autoregressive-constrained]="icl-autoregressive --preset constrained-rotation"
  [icl-autoregressive-constrained-gd]="icl-autoregressive --preset constrained-gd-commuting"
  [icl-autoregressive-gd-start]="icl-autoregressive --preset augmented-commuting-gd-start"
  [icl-autoregressive-paper-fig5]="icl-autoregressive --preset paper-fig5"
  [icl-autoregressive-non-augmented-64]="icl-autoregressive --preset non-augmented-64"
  [instruction-clustering]="instruction-clustering --preset quick"
  [steerability]="steerability --preset quick"
  [steerability-ablation]="steerability --preset ablation"
  [latent-ambiguity]="latent-ambiguity --preset quick --seeds 5"
  [latent-ambiguity-paper-small]="latent-ambiguity --preset paper-small"
  [representation-dissimilarity]="representation-dissimilarity --preset quick --seeds 5 --set train.stall_timeout=0"
  [function-classes]="function-classes --preset quick"
  [function-classes-curriculum-matched]="function-classes --preset quick --sweep task.function_class=decision_tree,relu_2nn"
  [function-classes-curriculum-sparse]="function-classes --preset quick --sweep task.function_class=sparse_linear"
  [function-classes-sparse-3x]="function-classes --preset quick --sweep task.function_class=sparse_linear --set train.steps=12000 --set train.eval_every=1500"
  [function-classes-sparse-6x]="function-classes --preset quick --sweep task.function_class=sparse_linear --set train.steps=24000 --set train.eval_every=3000 --set train.stall_timeout=0"
  [function-classes-sparse-12x]="function-classes --preset quick --sweep task.function_class=sparse_linear --set train.steps=48000 --set train.eval_every=6000"
  [icl-regression-recurrent-context-5000]="icl-regression --preset recurrent-context --set train.steps=5000 --set train.batch_size=2048 --set train.eval_every=250"
  [icl-regression-recurrent-context-5000-cosine]="icl-regression --preset recurrent-context --set train.steps=5000 --set train.batch_size=2048 --set train.eval_every=250 --set optim.schedule=cosine"
  [icl-regression-context]="icl-regression --preset context"
  [function-classes-sparse-control]="function-classes --preset quick --seeds 19 --sweep task.function_class=linear,sparse_linear"
)
# every stored reproduction, in the order of docs/reproductions/README.md's table
NAMES=${ONLY:-icl-regression icl-regression-recurrent icl-regression-deep icl-regression-recurrent-context icl-regression-softmax icl-regression-softmax-mlp icl-regression-depth icl-regression-depth-noisy icl-autoregressive icl-autoregressive-non-augmented icl-autoregressive-pe-only icl-autoregressive-constrained icl-autoregressive-constrained-gd icl-autoregressive-gd-start icl-autoregressive-paper-fig5 icl-autoregressive-non-augmented-64 instruction-clustering steerability steerability-ablation latent-ambiguity latent-ambiguity-paper-small representation-dissimilarity function-classes function-classes-curriculum-matched function-classes-curriculum-sparse function-classes-sparse-3x icl-regression-context function-classes-sparse-control function-classes-sparse-6x function-classes-sparse-12x icl-regression-recurrent-context-5000 icl-regression-recurrent-context-5000-cosine}
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
