"""Dense prediction from patch tokens: boxes, set matching, a CenterNet detector and segmentation
heads.
"""

from .boxes import (
    BOX_FORMATS,
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    generalized_box_iou,
    nms,
)
from .centernet import (
    CenterNet,
    CenterNetHead,
    centernet_focal_loss,
    centernet_loss,
    centernet_loss_fn,
    decode_centernet,
    encode_centernet_targets,
    gaussian_radius,
    heatmap_peaks,
)
from .matching import brute_force_match, hungarian_match, match_cost
from .segmentation import (
    SEG_HEADS,
    SegmentationHead,
    SegmentationModel,
    check_masks,
    predict_masks,
    segmentation_loss,
    segmentation_loss_fn,
)
