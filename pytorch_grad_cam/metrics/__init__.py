"""Faithfulness metrics: how much the model's confidence depends on what a CAM highlights."""

from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.metrics.deletion_insertion import (
    DeletionCurve,
    InsertionCurve,
    area_under_curve,
)
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)

__all__ = [
    "AveragerAcrossThresholds",
    "CamMultImageConfidenceChange",
    "DeletionCurve",
    "DropInConfidence",
    "IncreaseInConfidence",
    "InsertionCurve",
    "NoisyLinearImputer",
    "PerturbationConfidenceMetric",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
    "area_under_curve",
]
