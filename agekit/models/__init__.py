"""Model registry and factories. Importing this module registers every agekit model with timm."""
from . import mobileagenet  # noqa: F401  (registers models)
from . import convnext_vit  # noqa: F401  (registers convnext_vit_*, convnext_age_*)
from . import convnext_attn  # noqa: F401  (registers convnext_attn_*, convnext_attn_age_*)
from . import baselines  # noqa: F401  (registers convnext_cls_*, vit/mixer baselines)
from . import mivolo  # noqa: F401  (registers mivolo_*: face + body)
from . import lite_hybrid  # noqa: F401  (registers lite0_vit_*: the hybrid on ImageNet Lite0)
from . import lite_attn  # noqa: F401  (registers lite0_attn_*: attention inside ImageNet Lite0)
from .factory import create_model, load_backbone_weights, load_model
from .registry import AgeModelCfg, get_model_cfg, is_model, list_models, register_age_model
from .weights import WeightsError, save_weights

__all__ = [
    "AgeModelCfg", "WeightsError", "create_model", "get_model_cfg", "is_model", "list_models", "load_backbone_weights",
    "load_model", "register_age_model", "save_weights",
]
