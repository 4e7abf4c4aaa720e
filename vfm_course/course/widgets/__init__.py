"""Explorers for the lessons (:mod:`.explorer` says how each picks interactive or static):
a ViT's attention maps, MAE's mask ratio, and the similarity of position embeddings."""

from .attention import CLS_QUERY, attention_explorer, query_attention
from .explorer import WIDGET_MODES, WIDGETS_ENV, Explorer, use_widgets, widgets_available
from .mae import MAX_MASK_RATIO, STATIC_MASK_RATIOS, mae_mask_ratio_explorer, mae_views
from .pos_embed import pos_embed_explorer, pos_embed_similarity
