"""From-scratch parameter-efficient fine-tuning: LoRA (lora.py); adapters and prompt tuning follow."""
