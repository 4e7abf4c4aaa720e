"""Evaluation: classification and dense metrics (equal to torchmetrics), linear and k-NN probes,
zero-shot classification, attention-map segmentation, time and memory profiling, deployment
forms (export, int8).
"""

from .attention_masks import (
    attention_iou,
    attention_on_object,
    attention_scores,
    cls_attention,
    mask_iou,
    patch_mask_to_pixels,
    top_mass_mask,
)
from .classification import accuracy, confusion_matrix, evaluate_classifier
from .dense_metrics import (
    COCO_IOU_THRESHOLDS,
    COCO_RECALL_THRESHOLDS,
    average_precision,
    detection_matches,
    iou_from_confusion,
    jaccard_index,
    mean_average_precision,
    segmentation_confusion_matrix,
)
from .deployment import (
    DeploymentRow,
    deployment_table,
    export_model,
    quantize_int8,
    serialized_megabytes,
)
from .label_efficiency import label_efficiency, label_efficiency_features, labelled_subset
from .patch_kinds import PATCH_KINDS, patch_kinds
from .probe import (
    ProbeResult,
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_probe,
    probe_encoder,
    probe_features,
)
from .profiling import peak_memory, time_fn
from .zero_shot import zero_shot_accuracy, zero_shot_predict, zero_shot_weights
