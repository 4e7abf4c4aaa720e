"""Models built from the layers: the course ViT (and its timm twin), the SmallCNN, the text tower,
CLIP, SimCLR, MAE and DINO wrappers, dense-feature adapters, classifiers from encoders, and the
registry that builds or loads them by name.
"""

from .classifier import (
    backbone,
    classifier_from_encoder,
    count_trainable,
    train_all,
    train_head_only,
    train_last_blocks,
)
from .clip import CLIP, CLIP_PRESETS, MAX_LOGIT_SCALE, CLIPConfig
from .cnn import CNN_PRESETS, CNNConfig, SmallCNN, conv_bn_relu
from .dense_features import DenseEncoder, resize_vit, tokens_to_feature_map
from .dino import DINO, DINO_PRESETS, DINOBranch, DINOConfig, encode_views, teacher_momentum
from .dino_head import DINOHead, WeightNormLinear
from .mae import MAE_PRESETS, NORM_PIX_EPS, MAEConfig, MaskedAutoencoder, masked_patch_loss
from .registry import (
    build_model,
    course_checkpoint_path,
    load_course_encoder,
    load_course_model,
    read_manifest,
)
from .simclr import SIMCLR_PRESETS, ProjectionHead, SimCLR, SimCLRConfig
from .text import TextConfig, TextTransformer
from .timm_vit import from_timm, timm_kwargs, to_timm
from .vit import (
    ATTN_IMPLS,
    GLOBAL_POOLS,
    POS_EMBEDS,
    PRESETS,
    WEIGHT_INITS,
    VisionTransformer,
    ViTConfig,
    vit_config,
)
