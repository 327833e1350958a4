"""Written answers to the free-text bank items, labelled with the key points each one makes.

Used to calibrate and test `ftlab.quiz.scoring`: a key point the answer makes is a positive,
one it does not make is a negative. Answers are written the way candidates talk: strong, partial,
vague, and confidently off the point.
"""

# item id -> list of (answer, indices of the key points the answer makes)
CALIBRATION = {
    "ch00-explain-three-ways": [
        ("In full fine-tuning every parameter of the network is trained, so you need memory for all the "
         "gradients and a separate copy of the model for each task. Feature extraction freezes the "
         "pretrained encoder and you only fit a classifier head on top of its embeddings. PEFT like LoRA "
         "keeps the base frozen and trains a few extra low-rank matrices. Which one I use depends on how "
         "much data I have, the domain gap, my GPU budget and how many tasks I need to serve.", [0, 1, 2, 3]),
        ("Feature extraction means the pre-trained model is not updated, we just train a new output layer "
         "on its features. LoRA is a parameter efficient method that adds small trainable matrices while "
         "the original weights stay frozen.", [1, 2]),
        ("They are all ways to make the model better at your task. You train it on your data and it "
         "learns, some are faster than others.", []),
        ("Full fine-tuning is when you write a really long prompt with many examples, feature extraction "
         "is when you extract keywords from the text with regex.", []),
    ],
    "ch00-explain-pipeline": [
        ("First I pick a base model and check how well it does with plain prompting, that is my baseline. "
         "Then I gather and clean the data, format it for the model and keep a held-out eval split aside "
         "before training. I train, say with LoRA, and watch the train and validation loss curves. After "
         "training I evaluate on the task metric and also check general benchmarks for forgetting. Then "
         "I deploy it and monitor how it behaves in production.", [0, 1, 2, 3, 4]),
        ("I would clean up the dataset, convert it to the chat template and split off a test set. Then "
         "fine-tune and look at the loss curves for training and validation.", [1, 2]),
        ("You get a GPU, load the model with transformers, call trainer.train() and push it to the hub.", []),
        ("Machine learning projects need good communication with stakeholders and a clear roadmap "
         "with milestones.", []),
    ],
    "ch00-explain-data-efficiency": [
        ("Because the model already learned general representations of language during pre-training on "
         "an enormous corpus. Fine-tuning just adapts that knowledge to the specific task or output format, "
         "and since we start from good weights only a few gradient steps are needed.", [0, 1, 2]),
        ("The pretrained network already knows grammar and a lot of facts from its huge training set.", [0]),
        ("Because fine-tuning datasets are usually smaller.", []),
        ("Fine-tuning uses a special optimizer that converges in one step.", []),
    ],
    "ch02-explain-token-norm": [
        ("Each micro-batch can have a different number of real target tokens because of padding and the "
         "masked prompt part. If you average the mean loss of each micro-batch, every micro-batch gets the "
         "same weight, so tokens in a small micro-batch count more than tokens in a big one. So the "
         "accumulated gradient is not the same as the gradient of the big batch. To fix it you sum the "
         "per-token losses and divide by the total number of target tokens across the whole optimizer step.",
         [0, 1, 2, 3]),
        ("The problem is that the micro-batches have different token counts due to padding and masking. "
         "You should normalise by the total number of tokens in the whole accumulation step, not per "
         "micro-batch.", [0, 3]),
        ("Gradient accumulation lets you use a bigger batch than fits in memory, you just call backward "
         "several times before stepping.", []),
        ("The pitfall is that accumulation makes training slower because the GPU is idle, so use a "
         "larger learning rate to compensate.", []),
    ],
    "ch02-explain-precision": [
        ("bf16 has 8 exponent bits like fp32, so the range is the same but precision is lower. fp16 has "
         "only 5 exponent bits, so small gradients underflow to zero. Loss scaling multiplies the loss by a "
         "big factor before backward and then unscales the gradients before the optimizer step. The dynamic "
         "scaler skips a step when it sees inf or NaN gradients and reduces the scale.", [0, 1, 2, 3]),
        ("With fp16 the range is small and tiny gradient values become zero. That is why you scale the "
         "loss up before backpropagation and divide the gradients back afterwards.", [1, 2]),
        ("bf16 and fp16 are both half precision formats that make training faster on modern GPUs.", []),
        ("Loss scaling means you weight the loss of each class by its frequency so rare classes matter "
         "more.", []),
    ],
    "ch02-explain-7b-24gb": [
        ("No. Full fine-tuning with AdamW in mixed precision takes about 16 bytes per parameter for the "
         "weights, gradients, fp32 master weights and the two Adam moments. For 7 billion parameters that is "
         "around 112 GB before activations, way more than 24 GB. Instead I would use QLoRA: quantize the "
         "frozen base to 4-bit and train only small LoRA adapters, which are the only parameters with "
         "gradients and optimizer state. I would also enable gradient checkpointing and use a micro-batch "
         "of 1 with gradient accumulation.", [0, 1, 2, 3]),
        ("It does not fit, 7B times 16 bytes is roughly 112 GB. I would use LoRA with the base frozen so "
         "only the adapters are trained.", [1, 2]),
        ("Maybe, if you use a smaller batch size it should work on a 24 GB card.", []),
        ("Yes, a 7B model is about 7 GB so it fits easily with room to spare.", []),
    ],
}
