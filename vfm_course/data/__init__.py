"""Data: the procedural shapes world and its scenes and captions, real datasets (scikit-learn
digits offline; torchvision datasets in the full profile), augmentations and in-memory loaders.
"""

from .augment import (
    AugmentConfig,
    hflip,
    random_flip_shift,
    random_resized_crop_boxes,
    resized_crop,
    two_views,
)
from .captions import CaptionData, load_caption_data
from .colour import (
    BLUR_KERNEL_SIZE,
    GRAY_WEIGHTS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    image_batch,
    per_sample,
    rgb_to_grayscale,
)
from .datasets import (
    AUTO,
    SPLIT_SEEDS,
    get_classification_data,
    load_digits,
    load_shape_masks,
    load_shapes,
)
from .folder import FolderImages, find_images, load_image_folder, split_folder
from .loaders import BatchLoader, images_to_tensor
from .multicrop import GLOBAL_AUGMENT, LOCAL_AUGMENT, MultiCropConfig, multi_crop
from .raster import (
    add_clutter,
    add_noise,
    coverage,
    linear_gradient,
    local_coords,
    paint,
    pixel_centers,
    sample_background,
    sd_box,
    sd_circle,
    sd_cross,
    sd_heart,
    sd_segment,
    sd_square,
    sd_star,
    sd_triangle,
    smooth_field,
    to_uint8,
)
from .real import (
    IGNORE_INDEX,
    PENNFUDAN_TEST_IMAGES,
    PENNFUDAN_URL,
    TORCHVISION_DATASETS,
    DatasetFileError,
    PennFudanDataset,
    PetSegmentationTransform,
    load_pennfudan,
    load_torchvision,
)
from .scenes import SCENES_CONFIG, ScenesData, generate_scenes
from .shapes import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    COLOUR_NAMES,
    COLOURS,
    COURSE_WORLD,
    EXTENTS,
    POSITION_WORDS,
    SHAPE_CLASSES,
    SIZE_WORDS,
    ShapesConfig,
    ShapesData,
    backdrop,
    check_seed,
    check_shapes_config,
    generate_shapes,
    make_caption,
    object_rgb,
    position_phrase,
    sample_objects,
    shape_alpha,
    shape_masks,
    size_word,
)
from .tokenizer import PROMPT_WORDS, SPECIAL_TOKENS, Tokenizer, build_vocab
