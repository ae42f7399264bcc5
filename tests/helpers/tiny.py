"""The tiny corpus and model the tests train and export: constants and a seeded untrained run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# A tiny corpus the project wrote itself: short, varied sentences with repeated words, so a small
# model can learn to reconstruct all of them in seconds.
TINY_SENTENCES = [
    "the cat sat on the mat.",
    "a dog ran in the park.",
    "the sun is bright today.",
    "we read a good book.",
    "she likes green tea.",
    "he plays the old piano.",
    "birds sing in the morning.",
    "the river flows to the sea.",
    "my friend lives in a small town.",
    "it rained all night long.",
    "the children built a sand castle.",
    "coffee keeps me awake.",
    "the train leaves at noon.",
    "they painted the fence white.",
    "a cold wind blew from the north.",
    "the baker sells fresh bread.",
    "my phone battery is low.",
    "we walked along the beach.",
    "the teacher wrote on the board.",
    "snow covered the quiet hills.",
    "he fixed the broken chair.",
    "the garden is full of roses.",
    "she opened the window slowly.",
    "the clock struck twelve.",
    "a small boat crossed the lake.",
    "the students passed the exam.",
    "he forgot his umbrella again.",
    "the museum opens on monday.",
    "we cooked pasta for dinner.",
    "the movie was too long.",
    "a red kite flew over the field.",
    "the doctor visited the village.",
    "my sister paints every weekend.",
    "the road was closed for repairs.",
    "he drinks water after running.",
    "the lamp lit the dark room.",
    "she found a coin in the sand.",
    "the farmer planted corn.",
    "an owl hooted in the forest.",
    "the bus was late this morning.",
    "they danced at the wedding.",
    "the cake smells sweet.",
    "we watched the stars at night.",
    "the key is under the stone.",
    "he wrote a letter to his mother.",
    "the shop closes at six.",
    "a fox crossed the empty road.",
    "the kettle is boiling.",
    "she sang a quiet song.",
    "the ship sailed at dawn.",
]

# Small enough to overfit TINY_SENTENCES in a few seconds on 2 CPU cores.
TINY_MODEL = {"embedding_dim": 64, "hidden_size": 128, "latent_dim": 64}
TINY_TRAIN = {
    "vocab_size": 400,
    "batch_size": 10,
    "learning_rate": 5e-3,
    "warmup_steps": 10,
    "patience": 0,
    "eval_every": 40,
    "checkpoint_every": 40,
    "log_every": 5,
    "teacher_forcing_end": 0.8,
    "num_threads": 2,
}


def write_untrained_run(
    run_dir: Path, tokenizer: Any, *, train: Any = None, adjust: Callable[[Any], None] | None = None, **settings: Any
) -> Path:
    """A run folder (config.json, tokenizer.json, best.pt) holding a seeded, untrained model with
    these ModelConfig settings; adjust(model) may edit its weights first. Enough for export tests."""
    import torch

    from textae.config import ModelConfig, TrainConfig, save_json, to_dict
    from textae.tokenizer import TOKENIZER_FILE, special_token_ids
    from textae.training.checkpoint import BEST_FILE, CONFIG_FILE, save_checkpoint
    from textae.training.model import Autoencoder

    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(run_dir / TOKENIZER_FILE))
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), **settings, **special_token_ids(tokenizer))
    torch.manual_seed(0)
    model = Autoencoder(config)
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    save_json(run_dir / CONFIG_FILE, {"model": to_dict(config), "train": to_dict(train or TrainConfig())})
    save_checkpoint(run_dir / BEST_FILE, {"model": model.state_dict(), "model_config": to_dict(config), "step": 0, "metrics": {}})
    return run_dir
