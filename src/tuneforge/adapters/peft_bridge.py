"""Our `adapter:` section → a `peft` config, for every type peft implements.

One function per family keeps each mapping readable next to peft's own names;
tuneforge's keys are the papers' names (``r``, ``alpha``, ``size``) and peft's
spellings stay inside this file.
"""

from __future__ import annotations

from . import config as C


def peft_config(cfg, *, task_type: str, total_steps: int | None = None, tokenizer_path: str | None = None):
    """The peft ``PeftConfig`` for ``cfg`` (any type peft implements), for peft's ``TaskType[task_type]``."""
    import peft

    task = peft.TaskType[task_type]
    if isinstance(cfg, C.LoraConfig):
        init = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}[cfg.init]
        return peft.LoraConfig(
            task_type=task,
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            use_rslora=cfg.use_rslora,
            use_dora=cfg.use_dora,
            init_lora_weights=init,
        )
    if isinstance(cfg, C.LohaConfig):
        return peft.LoHaConfig(
            task_type=task, r=cfg.r, alpha=cfg.alpha, module_dropout=cfg.dropout, target_modules=cfg.target_modules
        )
    if isinstance(cfg, C.LokrConfig):
        return peft.LoKrConfig(
            task_type=task,
            r=cfg.r,
            alpha=cfg.alpha,
            module_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            decompose_factor=cfg.decompose_factor,
        )
    if isinstance(cfg, C.VeraConfig):
        return peft.VeraConfig(
            task_type=task,
            r=cfg.r,
            vera_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            d_initial=cfg.d_initial,
            projection_prng_key=cfg.projection_seed,
            save_projection=True,
        )
    if isinstance(cfg, C.AdaloraConfig):
        if not total_steps:
            raise ValueError("adapter.type adalora needs the run's total step count for its rank schedule")
        tinit, tfinal = int(cfg.tinit * total_steps), int(cfg.tfinal * total_steps)
        if tinit + tfinal >= total_steps:
            raise ValueError(
                f"adapter: adalora's tinit + tfinal ({tinit} + {tfinal} steps) leave no step of the "
                f"{total_steps} to prune the rank in; train longer or lower tinit / tfinal"
            )
        return peft.AdaLoraConfig(
            task_type=task,
            init_r=cfg.init_r,
            target_r=cfg.target_r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=cfg.delta_t,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            orth_reg_weight=cfg.orth_reg_weight,
            total_step=total_steps,
        )
    if isinstance(cfg, C.OftConfig):
        return peft.OFTConfig(
            task_type=task,
            r=0,
            oft_block_size=cfg.block_size,
            target_modules=cfg.target_modules,
            coft=cfg.coft,
            eps=cfg.eps,
            module_dropout=cfg.dropout,
        )
    if isinstance(cfg, C.Ia3Config):
        return peft.IA3Config(
            task_type=task, target_modules=cfg.target_modules, feedforward_modules=cfg.feedforward_modules
        )
    if isinstance(cfg, C.PromptTuningConfig):
        if cfg.init == "text":
            return peft.PromptTuningConfig(
                task_type=task,
                num_virtual_tokens=cfg.num_virtual_tokens,
                prompt_tuning_init=peft.PromptTuningInit.TEXT,
                prompt_tuning_init_text=cfg.init_text,
                tokenizer_name_or_path=tokenizer_path,
            )
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=cfg.num_virtual_tokens)
    if isinstance(cfg, (C.PrefixTuningConfig, C.MamConfig)):
        return peft.PrefixTuningConfig(
            task_type=task,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=cfg.projection,
            encoder_hidden_size=cfg.projection_hidden_size,
        )
    if isinstance(cfg, C.PTuningConfig):
        kind = {
            "mlp": peft.PromptEncoderReparameterizationType.MLP,
            "lstm": peft.PromptEncoderReparameterizationType.LSTM,
        }[cfg.encoder]
        return peft.PromptEncoderConfig(
            task_type=task,
            num_virtual_tokens=cfg.num_virtual_tokens,
            encoder_reparameterization_type=kind,
            encoder_hidden_size=cfg.encoder_hidden_size,
        )
    if isinstance(cfg, C.LayernormConfig):
        return peft.LNTuningConfig(task_type=task, target_modules=cfg.target_modules)
    raise TypeError(f"adapter.type {cfg.type} is not implemented by peft")
