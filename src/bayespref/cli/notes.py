"""Notes printed under a metric table where the numbers alone would mislead a reader."""

from __future__ import annotations

from collections.abc import Mapping

from ..metrics import METRICS, is_better


def synthetic_note(model: Mapping[str, float], baseline: Mapping[str, float] | None) -> str:
    """Two lines under ``bayespref train``'s table on synthetic data: why the model can lose to
    the train-mean predictor on ``soft_ce`` and ``ece`` while it wins on ``kl_true``.

    Every metric but ``kl_true`` compares the prediction q with t, the labels of 1-7 simulated
    annotators; each annotator labels from a mix of the true distribution p* and a bias of its
    own, so t is flatter (and noisier) than p*. A model that recovers p* is sharper than t and
    can score worse against t than the flat train mean, yet be much nearer the truth.
    """
    losing = []
    if baseline is not None:
        losing = [
            name
            for name in METRICS
            if name != "kl_true"
            and METRICS[name].selectable
            and name in model
            and name in baseline
            and is_better(name, baseline[name], model[name])
        ]
    nearer = baseline is not None and is_better(
        "kl_true", model.get("kl_true"), baseline.get("kl_true")
    )
    first = (
        "synthetic data: kl_true is the distance to the true distribution p*; the other metrics "
        "compare with t, the labels of 1-7 noisy"
    )
    if losing and nearer:
        return (
            f"{first}\nsimulated annotators, which is flatter than p*: the train mean wins on "
            f"{', '.join(losing)} while the model is nearer the truth (lower kl_true)."
        )
    return (
        f"{first}\nsimulated annotators, which is flatter than p*: judge a model here by kl_true."
    )
