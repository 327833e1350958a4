"""From-scratch parameter-efficient fine-tuning: LoRA (lora.py), bottleneck adapters (adapters.py),
prompt and prefix tuning (prompt.py); names.py holds the module-matching rule they share."""
