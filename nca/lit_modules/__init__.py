from nca.lit_modules.causal_lm import CausalLM, ModelConfig

__all__ = ["CausalLM", "ModelConfig"]
