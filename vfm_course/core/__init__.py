"""The bottom layer: input validation, profiles, config (de)serialisation, file checks and batched
inference. Imports nothing else of the package.
"""

from .configs import config_from_dict, config_to_jsonable
from .files import (
    CheckpointError,
    DataLocation,
    cache_dir,
    data_dir,
    data_location,
    download_dir,
    sha256_file,
    verify_sha256,
    work_dir,
)
from .inference import eval_mode, predict
from .profile import PROFILE_NAMES, PROFILES, Profile, get_profile, pick_device
from .validate import (
    check_choice,
    check_divisible,
    check_heads,
    check_images,
    check_labels,
    check_positive_int,
    check_temperature,
    check_tensor,
    is_int,
    is_number,
    resolve_config,
)
