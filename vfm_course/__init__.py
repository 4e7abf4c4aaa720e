"""vfm_course: the tested helper package behind the VFM Course notebooks.

Every kernel the lessons build from scratch lives here too, tested equal to the production
implementation it teaches (torch, timm, torchvision, torchmetrics).

Shape key (used in every docstring and shape comment in this package)::

    B  batch size                 C  image channels           H, W  image height, width
    P  patch size (pixels/side)   N  number of patches        Gh, Gw  patch grid height, width
    L  sequence length (tokens, N plus any CLS token)         S  key/value sequence length
    D  model width (embed_dim)    h  attention heads          d  head width (D // h)
    F  MLP hidden width           K  number of classes        T  text tokens
    E  shared image-text embedding width (CLIP)               M  kept (visible) tokens (MAE)

Modules, in dependency order: ``validate``, ``profile``, ``attention``, ``patches``,
``profiling``, ``pos_embed``, ``blocks``, ``vit``, ``cnn``, ``raster``, ``shapes``, ``scenes``,
``data``, ``torchvision_data``, ``checkpoint``, ``distributed``, ``train``, ``metrics``,
``probe``, ``augment``, ``contrastive``, ``text``, ``clip``, ``masking``, ``mae``, ``finetune``,
``detection``, ``segmentation``, ``viz``, ``checks``, ``recipes``, ``downstream``, ``exercises``,
``student``, ``grading``, ``widgets``, ``book``.
"""

__version__ = "0.1.0"
