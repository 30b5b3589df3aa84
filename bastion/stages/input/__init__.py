"""Input controls: the OpenAPI request contract (positive model) and injection inspection (negative model).

Pipeline entries (both read the `input` section of the baseline):
    StageSpec("input", input.build_head, input.prepare)   # parameters, Content-Type, header inspection
    StageSpec("input", input.build_body, input.prepare)   # needs_body: JSON/form/multipart, strip, inspection
"""

from bastion.stages.input.config import InputPolicy
from bastion.stages.input.stage import BodyStage, HeadStage, InputShared, build_body, build_head, prepare

__all__ = ["BodyStage", "HeadStage", "InputPolicy", "InputShared", "build_body", "build_head", "prepare"]
