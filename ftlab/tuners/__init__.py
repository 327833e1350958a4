"""From-scratch parameter-efficient fine-tuning: LoRA (lora.py), bottleneck adapters (adapters.py),
prompt tuning (prompt.py) and prefix tuning (prefix.py), both on virtual_tokens.py; targeting.py holds
peft's rule for picking modules by name, which all of them share."""
