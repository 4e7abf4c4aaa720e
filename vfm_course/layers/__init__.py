"""The building blocks the lessons build from scratch, each tested equal to the library it teaches:
attention, patches, position embeddings, transformer blocks, MAE's masking and LoRA.
"""

from .attention import (
    ATTN_IMPLS,
    causal_mask,
    check_attn_mask,
    chunked_attention,
    padding_mask,
    scaled_dot_product_attention,
)
from .blocks import LINEAR_INITS, LN_EPS, Block, Mlp, init_linear
from .lora import LoRALinear, apply_lora, lora_layers, merge_lora, unmerge_lora
from .masking import (
    MaskedTokens,
    check_mask_ratio,
    gather_tokens,
    insert_mask_tokens,
    num_kept,
    random_masking,
    unshuffle,
)
from .multihead import Attention, load_from_torch_mha, merge_heads, split_heads
from .patches import PatchEmbed, conv_weight_as_linear, patch_embed_as_linear, patchify, unpatchify
from .pos_embed import resample_pos_embed, sincos_pos_embed_1d, sincos_pos_embed_2d
