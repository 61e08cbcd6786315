"""The one config vocabulary: dataclasses with help text, YAML files, ``key=value`` overrides.

Every command reads its options the same way (:func:`load_yaml`): a YAML file whose keys mirror
a dataclass (nested sections are nested dataclasses), then dotted overrides such as
``loss.name=jsd optim.lr=3e-5`` (values parsed as YAML: ``true``, ``1e-4``, ``[1, 2]``,
``null``). Unknown keys are errors naming the key; a key that was renamed names its new place.

Sections shared by the recipes live here, once: :class:`OptimConfig` (AdamW and the schedule),
:class:`PeftConfig` (adapters), :class:`DecodingConfig` (candidate search and answer decoding).
A recipe gives a section its own defaults with ``section_default(Cls, key=value)``;
:func:`from_dict` fills a partial section from those defaults.
"""

from .core import (
    ConfigError,
    apply_overrides,
    field_help,
    from_dict,
    load_yaml,
    read_yaml_mapping,
    save_config,
    section_default,
    to_dict,
)
from .preference import (
    DataConfig,
    LossConfig,
    ModelConfig,
    PreferenceOptimConfig,
    TrainConfig,
    load_config,
)
from .shared import (
    DECODING_METHODS,
    PEFT_METHODS,
    DecodingConfig,
    OptimConfig,
    PaddedBatchesOptimConfig,
    PeftConfig,
    RunConfig,
    check_beam_settings,
)

__all__ = [
    "DECODING_METHODS",
    "PEFT_METHODS",
    "ConfigError",
    "DataConfig",
    "DecodingConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PaddedBatchesOptimConfig",
    "PeftConfig",
    "PreferenceOptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_beam_settings",
    "field_help",
    "from_dict",
    "load_config",
    "load_yaml",
    "read_yaml_mapping",
    "save_config",
    "section_default",
    "to_dict",
]
