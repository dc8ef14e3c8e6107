"""Reward/advantage math of the competing compression methods (pure, jittable).

  from ceeh_jax import methods as methods_lib
  state = methods_lib.init_state('hapo', num_questions)
  out = methods_lib.compute('hapo', config.method_hparams, methods_lib.RewardInputs(
      correct=c, boxed=b, lengths=l, truncated=t, qids=q), state, step, group_size=G)
  out.rewards, out.advantages (None -> GRPO group advantages), out.new_state, out.metrics

Modules: core (dispatch, defaults, host helpers), length (stateless shaping), history (HAPO,
LASER-D), egrc, entra, common. docs/methods_table.md lists sources, defaults and readings.
"""
from ceeh_jax.methods.core import CEEH_METHODS
from ceeh_jax.methods.core import compute
from ceeh_jax.methods.core import default_hparams
from ceeh_jax.methods.core import generation_limit
from ceeh_jax.methods.core import informative
from ceeh_jax.methods.core import init_state
from ceeh_jax.methods.core import loss_mask
from ceeh_jax.methods.core import MethodFlags
from ceeh_jax.methods.core import MethodOutput
from ceeh_jax.methods.core import METHODS
from ceeh_jax.methods.core import resolve_hparams
from ceeh_jax.methods.core import RewardInputs
from ceeh_jax.methods.core import sampling_temperature
from ceeh_jax.methods.core import select_groups
from ceeh_jax.methods.core import trainer_flags
from ceeh_jax.methods.egrc import COMPRESS
from ceeh_jax.methods.egrc import egrc_stage
from ceeh_jax.methods.egrc import EXPLORE
from ceeh_jax.methods.entra import attention_received
from ceeh_jax.methods.entra import entra_importance
from ceeh_jax.methods.entra import entra_redundancy
from ceeh_jax.methods.entra import token_type_entropy
from ceeh_jax.methods.history import init_hapo_state
from ceeh_jax.methods.history import init_laser_d_state
from ceeh_jax.methods.length import apply_overlong
from ceeh_jax.methods.length import dapo_overlong_penalty
from ceeh_jax.methods.length import informative_groups
from ceeh_jax.methods.length import kimi_lambda
from ceeh_jax.methods.length import thinkprune_limit
