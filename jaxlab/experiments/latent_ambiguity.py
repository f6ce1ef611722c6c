"""latent-ambiguity: in-context learning as Bayesian inference over latent intentions (Jiang 2023).

Jiang ("A Latent Space Theory for Emergent Abilities in Large Language Models", 2023) trains a
character-level transformer on a toy language of latent intentions (`jaxlab.tasks.latent`) and
reports, after m demonstrations of one intention, the KL divergence from his chain's prediction of
the next message's first letter (uniform over the letters of the current and the next intention)
to the model's distribution of that letter (ICL.py in his released code). Here every prediction
is compared with the truth given the scored message's intention, over all its letters, and with
the exact Bayes-optimal predictor (`jaxlab.tasks.latent_bayes`), across a grid of ambiguity levels
x model sizes x training steps. The two KLs are different quantities. The paper's claims, their
statistics, controls and rules are in `latent_ambiguity_claims`; their verdicts in summary.json
and the report's Claims table.

Evaluation data (fixed per program, key `train.eval_seed`): `train.eval_batch_size` prompts of M
messages. With `probe.eval_prompts="same_intention"` (default) all M messages share one intention:
message m + 1 follows m demonstrations of its intention (Jiang's ICL prompts); with `"chain"`
the prompts are drawn like the training data. For each prompt the Bayes predictive, the Bayes
posterior over theta and the true next-token distribution are computed once per program.

Metrics (nats; `a` = index of the run's language among the task settings of the sweep grid, i.e. the
index into the ambiguity grid, not the ambiguity itself; `m` = number of demonstrations = 0-based index
of the scored message). Their names carry them as metric parameters (`latent_ambiguity_claims.
language_metric`): the tidy tables have the metric (`kl_truth`) and the columns `message`, `position`,
`language`; run directories written before (`kl_truth_m1_a0`) are still read by the claims and the
report (`latent_ambiguity_claims.parse_language_metric`).
"Positions of message m" are the L positions whose target is one of its letters: the delimiter
before it (predicting its first letter) and its first L - 1 letters. With p the Bayes predictive,
q the model's softmax and p* the truth p(z_{t+1} | z_{<=t}, theta of every message):
  kl_bayes[message=m,language=a]        mean over prompts and positions of message m of KL(p || q)
  kl_truth[message=m,language=a]        same with KL(p* || q), p* = F_theta for the first letter and
                            T_theta[z_t, .] for the later ones, theta the true intention of the scored
                            message: the "KL of the model's next-letter distribution to the truth"
                            of jaxlab's ICL curves (the truth knows theta, the model must infer it;
                            all L letters). Not Jiang's metric, which scores the next message's
                            first letter only, against the uniform distribution over the letters
                            of the current and the next intention (ICL.py)
  bayes_kl_truth[message=m,language=a]  same with KL(p* || p): the Bayes predictor's own KL to the truth, the
                            floor no predictor can beat on average (E KL(p* || q) = E KL(p* || p)
                            + E KL(p || q) given the context); constant over training
  kl_bayes_mean[language=a]             KL(p || q) averaged over the letter positions of every message
  posterior_probe_acc[language=a]       closed-form ridge probe (`linear_probe.ridge_fit`) from the residual
                            stream after block `probe.probe_layer` to the Bayes posterior over theta
                            (the intention of the message being predicted), fit on the first half of
                            the prompts, scored on the second: the fraction of held-out letter
                            positions where the probe's arg-max intention is the Bayes arg-max
  posterior_probe_r2[language=a]        held-out R^2 of the same probe's posterior
  eval_loss                 model cross-entropy on the evaluation prompts (all positions)
After training (final step only): kl_bayes[position=j,language=a], kl_truth[position=j,language=a],
bayes_kl_truth[position=j,language=a]: the same KLs at slot j of a message (j = 0: its first letter), pooled
over the messages with m >= 1 demonstrations.
  kl_first_letter[message=m,language=a]   Jiang's ICL.py metric, m >= 1: KL(target || q) at the delimiter
                            after m demonstrations (the next message's first letter), target uniform over
                            the letters of the last demonstration's intention and the next intention
                            (`latent_bayes.first_letter_kl`), mean over prompts
  bayes_kl_first_letter[message=m,language=a]  the same with the Bayes predictive in place of q
Reference (summary.json): epsilon_transitions[language=a] = Jiang's own measure of ambiguity, the error
rate of his transition-only arg-max classifier (`latent_bayes.transition_ambiguity`, n = `probe.n_epsilon`,
standard error epsilon_transitions_se[language=a]); with a noise-free first letter,
bayes_kl_first_letter_exact[language=a] and bayes_kl_truth_exact[language=a] = the Bayes predictor's KL
under his metric and under jaxlab's all-letter metric in closed form (`latent_bayes.noise_free_bayes_kls`).
epsilon[language=a] = Jiang's epsilon measured exactly,
E_x[1 - max_theta p(theta | x)] over messages x of language a (n = `probe.n_epsilon`, standard error
epsilon_se[language=a]); epsilon[messages=m,language=a] = the same for m messages of one intention;
ambiguity[language=a] and first_letter_ambiguity[language=a] = the constants of language a. m runs
over 0..M-1; the issue's keys are m = 1..5 (M = 6 in every preset but smoke); m = 0 (no
demonstration) is kept for the curves.

Presets: `paper` and `paper-small` are Jiang's language exactly (his matrices: `task.language_rng="legacy"`,
`task.language_seed=1713`; his epsilon on the transitions; noise-free first letter), verified against his
generate_data.py: the same matrices to the last bit, and his ambiguity measure 0.0647 / 0.1593 / 0.3720
(± 0.0008 / 0.0012 / 0.0015, 100000 messages) at epsilon 0.02 / 0.04 / 0.1 where his script prints 0.0648 /
0.1570 / 0.3701. `quick` and `smoke` keep jaxlab's language (below).

Jiang's own setup, measured with `latent_bayes` (2048 same-intention prompts): with his language
(L = 21, stay/next 0.5, noise-free first letter) jaxlab's floor bayes_kl_truth is 0.0330 nats for
every m >= 1 and every ambiguity constant -- the first letter of a message hedges between staying
and moving on, every later letter costs 0. With the first letter as ambiguous as the transitions
(the paper preset) it is still flat: 0.036 -> 0.034 (m = 1 -> 5, c = 0.0269) and 0.036 -> 0.032
(c = 0.0485). Under his chain Bayesian ICL cannot lower this all-letter KL after the first
demonstration, so the quick preset uses stay 0.9 (floors 0.030 -> 0.011 and 0.057 -> 0.012): the
quick preset's language is not his. Under his own metric, with his noise-free first letter, one
demonstration names the intention and the exact Bayes predictor's KL is ~0 for every m >= 1: his
reported values (0.021-0.024 for the unambiguous language, 0.219 -> 0.049 at his 0.065) measure his
model's distance from the Bayes predictor, not a posterior that sharpens with m.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig, _choice
from jaxlab.errors import ConfigError
from jaxlab.experiments import latent_ambiguity_claims as _claims
from jaxlab.experiments import latent_ambiguity_report as _report
from jaxlab.experiments.latent_ambiguity_claims import language_metric
from jaxlab.models import count_params, run_with_cache
from jaxlab.models.presets import gpt_model
from jaxlab.probes.linear_probe import linear_predict, r2_score, ridge_fit
from jaxlab.rng import rng_scope
from jaxlab.tasks import latent
from jaxlab.tasks import latent_bayes as bayes
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.groups import plan_groups

if TYPE_CHECKING:
    from jaxlab.train.engine import EvalFn, Train, TrainState

EVAL_PROMPTS = ("same_intention", "chain")


@dataclass(frozen=True)
class LatentProbeConfig(ProbeConfig):
    """Evaluation settings of latent-ambiguity (see the module docstring)."""

    section: ClassVar[str] = "probe"
    eval_prompts: str = "same_intention"
    probe_layer: int = -1
    ridge_lam: float = 1e-2
    n_epsilon: int = 4096

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "eval_prompts": "evaluation prompts: M messages of one intention (same_intention), or like training (chain)",
        "probe_layer": "block whose output the posterior probe reads (negative: counted from the end)",
        "ridge_lam": "ridge penalty of the posterior probe",
        "n_epsilon": "messages sampled to measure Jiang's epsilon",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"eval_prompts": EVAL_PROMPTS}

    def validate(self) -> None:
        n = self._name
        _choice(n("eval_prompts"), self.eval_prompts, EVAL_PROMPTS)
        if not self.ridge_lam > 0:
            raise ConfigError(n("ridge_lam"), f"must be > 0, got {self.ridge_lam!r}")
        if self.n_epsilon < 2:
            raise ConfigError(n("n_epsilon"), f"needs at least 2 messages, got {self.n_epsilon}")


# -- which language a program trains on ------------------------------------------------------------
def task_grid(cfg: ExperimentConfig) -> list[tuple[tuple[str, Any], ...]]:
    """The task settings of the sweep grid, in grid order (one empty setting when none is swept)."""
    keys = [(k, v) for k, v in cfg.sweep.grid if k.startswith("task.")]
    return [tuple(zip([k for k, _ in keys], combo)) for combo in itertools.product(*(v for _, v in keys))]


def ambiguity_index(cfg: ExperimentConfig) -> int:
    """a: the index of this program's task setting among those of the grid (0 without a task grid)."""
    settings = task_grid(cfg)
    mine = tuple((k, cfg.get(k)) for k, _ in settings[0])
    return settings.index(mine)


def _probe_hook(cfg: ExperimentConfig) -> str:
    n_layers, layer = cfg.model.n_layers, cfg.probe.probe_layer
    if not -n_layers <= layer < n_layers:
        raise ConfigError("probe.probe_layer", f"the model has {n_layers} block(s)", list(range(-n_layers, n_layers)))
    return f"blocks.{layer % n_layers}.hook_resid_post"


def _letter_masks(task: latent.Config) -> tuple[np.ndarray, np.ndarray]:
    """([M, T] positions of message m, [L, T] positions of slot j in messages m >= 1), as 0/1."""
    k, j = latent.positions(task)
    L, M = task.message_len, task.n_messages
    by_message = np.stack([(k == m) & (j < L) for m in range(M)]).astype(np.float32)
    by_slot = np.stack([(j == s) & (k >= 1) for s in range(L)]).astype(np.float32)
    return by_message, by_slot


# -- evaluation data: prompts with their Bayes and true distributions ------------------------------
def make_eval_data(train: Train) -> dict[str, jax.Array]:
    """Prompts with their Bayes predictive and posterior and their true next-token distributions."""
    task, n = train.cfg.task, train.cfg.train.eval_batch_size
    same = train.cfg.probe.eval_prompts == "same_intention"
    with rng_scope():
        batch = latent.sample_sequences(train.eval_key(), task, n, same_intention=same)
    lang = bayes.log_language(task)
    bayes_logp, bayes_post = bayes.bayes_predictive(task, batch.inputs, lang)
    true_logp = bayes.true_predictive(task, batch.inputs, batch.aux["theta"], lang)
    return {
        "inputs": batch.inputs,
        "targets": batch.targets,
        "theta": batch.aux["theta"],
        "bayes_logp": bayes_logp,
        "bayes_post": jnp.exp(bayes_post),
        "true_logp": true_logp,
    }


def model_kls(
    train: Train, params: Any, data: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(KL(p || q) [N, T], KL(p* || q) [N, T], log q [N, T, V + 1], residual [N, T, D]) of one run."""
    out, cache = run_with_cache(train.model, params, data["inputs"], names=[_probe_hook(train.cfg)])
    logq = jax.nn.log_softmax(out.astype(jnp.float32), axis=-1)
    resid = cache[_probe_hook(train.cfg)]
    return bayes.kl(data["bayes_logp"], logq), bayes.kl(data["true_logp"], logq), logq, resid


def posterior_probe(
    resid_NTD: jax.Array, post_NTK: jax.Array, letter_T: np.ndarray, lam: float
) -> tuple[jax.Array, jax.Array]:
    """(arg-max agreement, R^2) on the held-out half of a ridge probe from residuals to the posterior."""
    cols = np.flatnonzero(letter_T)
    x, y = resid_NTD[:, cols], post_NTK[:, cols]
    half = x.shape[0] // 2
    flat = lambda a: a.reshape(-1, a.shape[-1])
    w, b = ridge_fit(flat(x[:half]), flat(y[:half]), lam)
    pred = linear_predict(flat(x[half:]), w, b)
    y_test = flat(y[half:])
    return jnp.mean(jnp.argmax(pred, -1) == jnp.argmax(y_test, -1)), r2_score(y_test, pred)


def _masked_means(values_NT: jax.Array, masks_ST: np.ndarray) -> jax.Array:
    return jnp.einsum("nt,st->s", values_NT, masks_ST) / (values_NT.shape[0] * masks_ST.sum(-1))


def make_evaluate(cfg: ExperimentConfig) -> EvalFn:
    """The on-device evaluation of this program's language `a`: the model's KL to the Bayes predictive and to
    the truth per message m, the Bayes floor, Jiang's first-letter KL of the model and of the Bayes
    predictor, the mean KL over letter positions, the posterior probe's accuracy and R^2, and the
    evaluation loss (metric names in the module docstring).
    """
    a = ambiguity_index(cfg)
    by_message, _ = _letter_masks(cfg.task)
    letters = by_message.sum(0)
    _probe_hook(cfg.resolve())

    def evaluate(train: Train, params: Any, data: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        kl_b, kl_t, logq, resid = model_kls(train, params, data)
        floor = bayes.kl(data["true_logp"], data["bayes_logp"])
        xent = -jnp.take_along_axis(logq, data["targets"][..., None], axis=-1)[..., 0]
        metrics = {"eval_loss": jnp.mean(xent)}
        per_m = {"kl_bayes": _masked_means(kl_b, by_message), "kl_truth": _masked_means(kl_t, by_message)}
        per_m["bayes_kl_truth"] = _masked_means(floor, by_message)
        for name, values in per_m.items():
            for m in range(by_message.shape[0]):
                metrics[language_metric(name, a, message=m)] = values[m]
        first = {
            "kl_first_letter": bayes.first_letter_kl(train.cfg.task, data["theta"], logq),
            "bayes_kl_first_letter": bayes.first_letter_kl(train.cfg.task, data["theta"], data["bayes_logp"]),
        }
        for name, values_NM in first.items():
            for m in range(1, by_message.shape[0]):
                metrics[language_metric(name, a, message=m)] = jnp.mean(values_NM[:, m - 1])
        metrics[language_metric("kl_bayes_mean", a)] = _masked_means(kl_b, letters[None])[0]
        acc, r2 = posterior_probe(resid, data["bayes_post"], letters, train.cfg.probe.ridge_lam)
        metrics[language_metric("posterior_probe_acc", a)] = acc
        metrics[language_metric("posterior_probe_r2", a)] = r2
        return metrics

    return evaluate


# -- after training --------------------------------------------------------------------------------
def language_reference(cfg: ExperimentConfig, a: int) -> dict[str, float]:
    """Measured epsilon (exact posterior, Monte Carlo over messages), Jiang's transition-only epsilon, the
    constants of language a and, with a noise-free first letter, the Bayes predictor's KLs in closed form."""
    task = cfg.task
    eps, se = bayes.measured_ambiguity(task, jax.random.key(cfg.train.eval_seed + 1), cfg.probe.n_epsilon)
    c1 = task.ambiguity if task.first_letter_ambiguity is None else task.first_letter_ambiguity
    ref = {language_metric("epsilon", a): float(eps[0]), language_metric("epsilon_se", a): float(se[0])}
    ref.update({language_metric("epsilon", a, messages=m + 1): float(e) for m, e in enumerate(eps)})
    ref.update({language_metric("ambiguity", a): task.ambiguity, language_metric("first_letter_ambiguity", a): c1})
    jiang, jiang_se = bayes.transition_ambiguity(task, jax.random.key(cfg.train.eval_seed + 2), cfg.probe.n_epsilon)
    ref[language_metric("epsilon_transitions", a)] = jiang
    ref[language_metric("epsilon_transitions_se", a)] = jiang_se
    if c1 == 0:
        first, every = bayes.noise_free_bayes_kls(task)
        ref[language_metric("bayes_kl_first_letter_exact", a)] = first
        ref[language_metric("bayes_kl_truth_exact", a)] = every
    return ref


def _n_programs(cfg: ExperimentConfig) -> int:
    return len(plan_groups(cfg, check=False))  # the sweep was checked before it started


def finalize(train: Train, state: TrainState, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """Per-slot KL profiles of every run (final parameters); the languages when this is the only program."""
    cfg = train.cfg
    a = ambiguity_index(cfg)
    data = jax.jit(train.make_eval_batch)()
    _, by_slot = _letter_masks(cfg.task)

    @jax.jit
    def profiles(params_R, data):
        def one(params):
            kl_b, kl_t, _, _ = model_kls(train, params, data)
            return _masked_means(kl_b, by_slot), _masked_means(kl_t, by_slot)

        return jax.vmap(one)(params_R), _masked_means(bayes.kl(data["true_logp"], data["bayes_logp"]), by_slot)

    (kl_b, kl_t), floor = jax.device_get(profiles(state.params, data))
    R = np.asarray(seeds).shape[0]
    n_params = count_params(jax.tree_util.tree_map(lambda x: x[0], state.params))
    per_run: dict[str, np.ndarray] = {"n_params": np.full(R, float(n_params))}
    for j in range(by_slot.shape[0]):
        per_run[language_metric("kl_bayes", a, position=j)] = np.asarray(kl_b[:, j])
        per_run[language_metric("kl_truth", a, position=j)] = np.asarray(kl_t[:, j])
        per_run[language_metric("bayes_kl_truth", a, position=j)] = np.full(R, float(floor[j]))
    # With several programs the languages are described once, by `after_sweep`, without the
    # per-program "[label]" suffix the summary would give them here.
    reference = language_reference(cfg, a) if _n_programs(cfg) == 1 else {}
    return Finalized(per_run=per_run, reference=reference)


def after_sweep(outcomes: list[Any]) -> Finalized:
    """The measured ambiguity of every language of a sweep of several programs, once each."""
    reference: dict[str, float] = {}
    done: set[int] = set()
    for outcome in outcomes:
        cfg = outcome.group.cfg
        a = ambiguity_index(cfg)
        if a not in done:
            reference.update(language_reference(cfg, a))
            done.add(a)
    return Finalized(reference=reference)


# -- presets ---------------------------------------------------------------------------------------
# Constants c whose measured epsilon matches Jiang's labels 0, 0.065 and 0.157 (bisection on
# `latent_bayes.measured_ambiguity` with 16384 messages: 0.0650 / 0.1570 for 8-letter messages,
# 0.0648 / 0.1570 for 21-letter ones, standard errors <= 0.0017).
QUICK_AMBIGUITY = (0.0, 0.0098, 0.0227)
PAPER_AMBIGUITY = (0.0, 0.0269, 0.0485)


# Jiang's noise epsilon (generate_data.py -e): his measured ambiguity 0 / 0.065 / 0.157 (his script, his seed)
JIANG_EPSILON = (0.0, 0.02, 0.04)


def _jaxlab_language() -> ExperimentConfig:
    """The base of the quick and smoke presets: 21-letter messages, Jiang's chain, the first letter as
    ambiguous as the transitions, blocks from NumPy's default generator (jaxlab's language, not his)."""
    return ExperimentConfig(
        experiment="latent-ambiguity",
        preset="paper",
        model=gpt_model(n_layers=3, n_heads=4, d_model=128),  # a character model in nanoGPT's layout
        task=latent.Config(message_len=21, n_messages=6, chain_stay=0.5),
        optim=OptimConfig(
            name="adamw", lr=1e-3, weight_decay=0.0, clip_norm=1.0, schedule="warmup_cosine", warmup_steps=200
        ),
        train=TrainConfig(steps=20000, batch_size=64, eval_schedule="log", n_evals=12, eval_batch_size=512),
        probe=LatentProbeConfig(),
        sweep=SweepConfig(
            seeds=(0, 1, 2),
            grid=(("task.ambiguity", PAPER_AMBIGUITY), ("model.n_layers", (1, 3)), ("model.d_model", (64, 128))),
        ),
    )


def paper() -> ExperimentConfig:
    """Jiang's language exactly: K = 6 intentions x 3 letters, 21-letter messages (a first letter and 20
    transitions), his stay 0.5 / next 0.5 chain, his transition blocks (legacy NumPy generator, seed
    1713), his noise epsilon 0 / 0.02 / 0.04 on the transition matrices and a noise-free first letter;
    6 messages a sequence (132 tokens, his README's block size is 128).

    Scaled for a CPU (never run here: hours on 2 cores): Jiang trains one 3-layer, 12-head, d = 768
    nanoGPT for 5000 iterations of 12 windows; here 3 layers x d = 32 / 64 / 128 (4 heads, MLP 512),
    10000 steps of 32 sequences, 5 seeds.
    """
    return _jaxlab_language().derive(
        "paper",
        {
            "task.first_letter_ambiguity": 0.0,
            "task.language_rng": "legacy",
            "task.language_seed": 1713,
            "optim.lr": 1e-3,
            "train.steps": 10000,
            "train.batch_size": 32,
            "probe.n_epsilon": 16384,
        },
        sweep=SweepConfig(
            seeds=(0, 1, 2, 3, 4), grid=(("task.ambiguity", JIANG_EPSILON), ("model.d_model", (32, 64, 128)))
        ),
    )


def paper_small() -> ExperimentConfig:
    """Jiang's language (as `paper`) at his epsilon 0.02 (ambiguity 0.065) only, 5 messages a prompt (his
    m = 1..4), within about 15 minutes on a shared 2-core CPU: 1 layer x d = 8 / 16 / 32 (2 heads, MLP 64),
    600 steps of 16 sequences, 5 seeds."""
    return paper().derive(
        "paper-small",
        {
            "task.ambiguity": 0.02,
            "task.n_messages": 5,
            "model.n_layers": 1,
            "model.n_heads": 2,
            "model.d_mlp": 64,
            "optim.lr": 3e-3,
            "optim.warmup_steps": 50,
            "train.steps": 600,
            "train.batch_size": 16,
            "train.n_evals": 4,
            "train.eval_batch_size": 256,
            "probe.n_epsilon": 8192,
        },
        sweep=SweepConfig(seeds=(0, 1, 2, 3, 4), grid=(("model.d_model", (8, 16, 32)),)),
    )


def quick() -> ExperimentConfig:
    """Minutes on a 2-core CPU: 8-letter messages, intention chain stay 0.9 (with Jiang's 0.5 the
    next message's intention is a coin flip whatever the demonstrations, so the Bayes floor cannot
    fall with m), 1- and 2-layer models of width 32, 2000 steps of 32 sequences, 2 seeds."""
    return _jaxlab_language().derive(
        "quick",
        {
            "task.message_len": 8,
            "task.chain_stay": 0.9,
            "model.n_layers": 2,
            "model.d_model": 32,
            "model.d_mlp": 128,
            "optim.lr": 3e-3,
            "train.steps": 2000,
            "train.batch_size": 32,
            "train.n_evals": 8,
            "train.eval_batch_size": 256,
        },
        sweep=SweepConfig(seeds=(0, 1), grid=(("task.ambiguity", QUICK_AMBIGUITY), ("model.n_layers", (1, 2)))),
    )


def smoke() -> ExperimentConfig:
    """Seconds on a CPU: for tests."""
    return _jaxlab_language().derive(
        "smoke",
        {
            "task.n_intentions": 3,
            "task.letters_per_intention": 2,
            "task.message_len": 4,
            "task.n_messages": 3,
            "task.chain_stay": 0.9,
            "task.ambiguity": 0.05,
            "model.n_layers": 1,
            "model.n_heads": 2,
            "model.d_model": 16,
            "model.d_mlp": 32,
            "optim.lr": 3e-3,
            "optim.warmup_steps": 0,
            "optim.schedule": "constant",
            "train.steps": 40,
            "train.batch_size": 16,
            "train.eval_schedule": "linear",
            "train.eval_every": 20,
            "train.eval_batch_size": 64,
            "probe.n_epsilon": 256,
        },
        sweep=SweepConfig(seeds=(0, 1)),
    )


METRICS = {
    "kl_bayes[message=m,language=a]": (
        "KL(Bayes predictive || model), mean over the letter positions of the message after m demonstrations "
        "(nats); a = the index of the run's language in the sweep grid's task settings (tidy tables: metric "
        "kl_bayes, columns message and language; likewise below)"
    ),
    "kl_truth[message=m,language=a]": (
        "KL(truth || model), truth = p(next | context, intention of every message), same positions (nats)"
    ),
    "bayes_kl_truth[message=m,language=a]": (
        "KL(truth || Bayes predictive), the floor of kl_truth, same positions (nats)"
    ),
    "kl_first_letter[message=m,language=a]": (
        "Jiang's ICL metric (ICL.py), m >= 1: KL(target || model) for the first letter of the message after m "
        "demonstrations, target uniform over the letters of the last demonstration's intention and the next one, "
        "mean over prompts (nats)"
    ),
    "bayes_kl_first_letter[message=m,language=a]": (
        "the exact Bayes predictor's KL under Jiang's metric, same prompts (nats; constant over training)"
    ),
    "kl_bayes_mean[language=a]": "KL(Bayes || model) over the letter positions of all messages (nats)",
    "posterior_probe_acc[language=a]": (
        "held-out fraction of letter positions where a ridge probe of the residual stream picks the Bayes "
        "arg-max intention"
    ),
    "posterior_probe_r2[language=a]": "held-out R^2 of that probe's prediction of the Bayes posterior over intentions",
    "kl_bayes[position=j,language=a], kl_truth[position=j,language=a], bayes_kl_truth[position=j,language=a]": (
        "the three KLs at slot j of messages with m >= 1 demonstrations, after training (nats; tidy tables: the "
        "metric with columns position and language)"
    ),
    "eval_loss": "model cross-entropy on the evaluation prompts, every position (nats)",
    "n_params": "number of model parameters (after training, for the emergence figure)",
    "train_loss": "cross-entropy on the training stream, mean over the steps since the last evaluation (nats)",
}


EXPERIMENT = Experiment(
    name="latent-ambiguity",
    description=(
        "In-context learning as Bayesian inference over latent intentions, against the exact "
        "Bayes-optimal predictor (Jiang 2023)."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper, "paper-small": paper_small},
    probe_class=LatentProbeConfig,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    eval_data=make_eval_data,
    finalize=finalize,
    report=_report.sections,
    after_sweep=after_sweep,
    claims=_claims.CLAIMS,
    deviations=_claims.deviations,
)
