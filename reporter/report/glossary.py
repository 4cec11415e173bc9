"""The report's glossary: what each measure means, its scale, and which way is better.

One entry per measure the report's tables and cover show. Templates link a table header to
its entry with the ``term`` macro of ``templates/macros.html`` (``term('ece')`` is a link to
``#glossary-ece``); a key that is not here fails the render (``StrictUndefined``), so a
report never holds a link to a missing entry.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GLOSSARY", "Term"]


@dataclass(frozen=True)
class Term:
    """One glossary entry.

    Attributes:
        name: The name the report uses.
        meaning: What the measure is, in one or two sentences.
        scale: Its range and unit.
        better: ``"higher"``, ``"lower"`` or ``"neither"`` (a description, not a score).
        reference: Where it comes from (paper or standard), or ``""``.
    """

    name: str
    meaning: str
    scale: str
    better: str
    reference: str = ""


GLOSSARY: dict[str, Term] = {
    "accuracy": Term(
        "Accuracy",
        "The share of test images whose predicted class (the highest score) is the true class.",
        "0 to 100 %",
        "higher",
    ),
    "top5": Term(
        "Top-5 accuracy",
        "The share of test images whose true class is among the five highest scores.",
        "0 to 100 %; at least the accuracy",
        "higher",
    ),
    "precision": Term(
        "Precision",
        "Of the images predicted as a class, the share that truly belong to it.",
        "0 to 1",
        "higher",
    ),
    "recall": Term(
        "Recall",
        "Of the images of a class, the share the model predicts as that class "
        "(the class's accuracy).",
        "0 to 1",
        "higher",
    ),
    "f1": Term(
        "F1 score",
        "The harmonic mean of a class's precision and recall.",
        "0 to 1",
        "higher",
    ),
    "macro_f1": Term(
        "Macro F1",
        "The mean of the per-class F1 scores, every class counting the same however many "
        "images it has.",
        "0 to 1",
        "higher",
    ),
    "ece": Term(
        "Expected calibration error (ECE)",
        "Predictions are grouped by confidence into 15 equal bins; ECE is the mean gap between "
        "a bin's confidence and its accuracy, weighted by the bin's share of the images. A "
        "model that says 80 % and is right 80 % of the time has ECE 0.",
        "0 to 1",
        "lower",
        "Guo et al., 2017",
    ),
    "confidence": Term(
        "Confidence",
        "The probability (softmax) the model gives its predicted class.",
        "0 to 1",
        "neither",
    ),
    "spearman": Term(
        "Rank correlation (Spearman)",
        "How alike two saliency maps are in the order of their pixels: 1 the same order, 0 "
        "unrelated, −1 reversed. In the randomization test it compares the maps of the trained "
        "and the randomized network.",
        "−1 to 1",
        "lower in the randomization test (the maps should change); higher for agreement",
        "Adebayo et al., 2018",
    ),
    "ssim": Term(
        "SSIM (structural similarity)",
        "How alike two maps look in local structure (mean, contrast, correlation of small "
        "windows).",
        "−1 to 1 (1 identical)",
        "lower in the randomization test",
        "Wang et al., 2004",
    ),
    "sanity": Term(
        "Randomization (sanity) test",
        "The network's weights are re-initialised layer by layer from the output down and the "
        "maps recomputed. A method whose maps hardly change does not show what the model "
        "learned. Passed, inconclusive or failed by the 95 % interval of the rank correlation "
        "and SSIM against thresholds.",
        "status: passed, inconclusive, failed",
        "passed (the maps depend on what the model learned)",
        "Adebayo et al., 2018",
    ),
    "floor": Term(
        "Floor",
        "The rank correlation between the maps of two unrelated random networks: how far the "
        "randomization test can fall for a method whose maps follow the image's structure.",
        "−1 to 1",
        "neither (a reference)",
    ),
    "deletion": Term(
        "Deletion area (AUC)",
        "The area under the class probability as the most salient pixels are removed first. "
        "A faithful map makes it fall fast.",
        "0 to 1",
        "lower",
        "Petsiuk et al., 2018",
    ),
    "insertion": Term(
        "Insertion area (AUC)",
        "The area under the class probability as the most salient pixels are inserted first "
        "into a blurred or empty image. A faithful map makes it rise fast.",
        "0 to 1",
        "higher",
        "Petsiuk et al., 2018",
    ),
    "random_maps": Term(
        "Random maps (reference)",
        "The deletion or insertion area that random saliency maps reach on the same images: "
        "a map is informative only where it beats this.",
        "0 to 1",
        "neither (a reference)",
    ),
    "average_drop": Term(
        "Average drop",
        "How much the class probability falls, on average, when only the salient region "
        "(image × map) is shown.",
        "0 to 100 %",
        "lower",
        "Chattopadhay et al., 2018",
    ),
    "increase": Term(
        "Increase in confidence",
        "How often the class probability rises when only the salient region is shown.",
        "0 to 100 %",
        "higher",
        "Chattopadhay et al., 2018",
    ),
    "pointing_game": Term(
        "Pointing game",
        "The share of images whose map has its maximum on the object (object masks needed).",
        "0 to 100 %",
        "higher",
        "Zhang et al., 2018",
    ),
    "energy_inside": Term(
        "Energy inside (energy-based pointing game)",
        "The share of a map's total saliency that lies on the object. A map that ignored the "
        "object would score about the object's share of the image area.",
        "0 to 100 %",
        "higher",
        "Wang et al., 2020 (Score-CAM)",
    ),
    "border": Term(
        "Border share",
        "The share of a map's saliency in the outer band of the image. Much saliency there "
        "suggests the model reads the background or the frame, not the object.",
        "0 to 100 %",
        "lower (compare with the band's share of the area)",
    ),
    "location_agreement": Term(
        "Location agreement",
        "How consistently the maps of a class's images light up the same place: the mean "
        "Pearson correlation over all pairs of its maps (pooled to at most 32 × 32). High "
        "agreement can be a watermark-like cue.",
        "−1 to 1",
        "neither (a clue, confirmed only by the intervention)",
    ),
    "shortcut": Term(
        "Shortcut intervention",
        "The images are changed (background swapped behind the object, or a class's salient "
        "region pasted into other images) and the predictions compared. A class whose "
        "predictions follow the change relies on a shortcut.",
        "recall drop, predictions changed, pull: 0 to 100 %",
        "lower",
    ),
    "agreement": Term(
        "Agreement between methods",
        "The mean rank correlation between the maps of two methods on the same images.",
        "−1 to 1",
        "higher (methods that disagree tell different stories)",
    ),
    "interval": Term(
        "95 % interval",
        "The range that holds the true value with 95 % probability under resampling of the "
        "images (bootstrap); a wide interval means few images.",
        "same as the measure",
        "narrower",
    ),
    "n": Term(
        "n",
        "The number of images (or maps) a number rests on.",
        "a count",
        "higher (more certain)",
    ),
}
