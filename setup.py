"""Packaging for the FitPrune LLaVA fork: one distribution with the `llava` and `fitprune` packages."""
from setuptools import find_packages, setup

setup(
    name="llava-fitprune",
    version="0.1.0",
    description="LLaVA-1.5 inference and evaluation with FitPrune visual-token pruning",
    python_requires=">=3.9",
    packages=find_packages(
        exclude=["assets*", "benchmark*", "docs", "dist*", "playground*", "scripts*", "tests*"]
    ),
    package_data={"llava": ["model/pruning/recipes/*.json", "model/pruning/recipes/configs/*.json"]},
    include_package_data=True,
    install_requires=[
        # 2.6 is the first torch whose torch.load defaults to weights_only=True, so a pickled
        # checkpoint that peft (or transformers outside llava.utils.safe_weights_loading) reads
        # cannot run code
        "torch>=2.6",
        "transformers==4.31.0",
        "safetensors",
        "tokenizers>=0.12.1,<0.14",
        "sentencepiece",
        "shortuuid",
        "pillow",
        "tqdm",
        "accelerate",
        "numpy",
    ],
    extras_require={
        "train": ["deepspeed"],
        # the web demo (python -m llava.serve.gradio_web_server), tested with gradio 5.50.0 (the last 5.x),
        # whose huggingface_hub range (>=0.33.5,<2) admits the 0.x releases transformers 4.31 needs
        "serve": ["gradio==5.50.0"],
        # selenium drives headless Chromium in tests/test_web_demo.py
        "dev": ["pytest", "matplotlib", "selenium"],
    },
)
