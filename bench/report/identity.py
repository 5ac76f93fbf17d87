"""What names a row of the report: the method instance (name plus network and recipe), the backend
setup (what makes two runs comparable) and the machine a speed was measured on.

``imsim.backends.setup`` holds the same ``setup_key``/``setup_label`` for fps and parity; the
report keeps its own copy until it imports them from there.
"""

from __future__ import annotations

from typing import Any

from imsim.backends.setup import setup_key, setup_label

__all__ = [
    "dataset_label",
    "device_label",
    "machine_label",
    "method_label",
    "model_label",
    "setup_key",
    "setup_label",
]


def model_label(describe: dict[str, Any] | None) -> str | None:
    """The network and recipe behind a method instance, from its ``describe()``: ``ResNet-56``,
    ``ViT-B-32``, ``ResNet-20, seed recipe``.

    Part of the method's name in the report, so a ResNet-20 checkpoint's accuracy is never shown
    beside a ResNet-56's speed, nor one CLIP model's or recipe's beside another's.
    """
    if not describe:
        return None
    parts = []
    arch = describe.get("arch")
    if isinstance(arch, dict) and arch.get("name"):
        if arch["name"] == "resnet_cifar" and arch.get("depth"):
            parts.append(f"ResNet-{arch['depth']}")
        elif arch["name"] == "vit_cifar":
            parts.append(f"ViT-{arch.get('size', '?')}")
        else:
            parts.append(str(arch["name"]))
    elif describe.get("clip_model"):
        parts.append(str(describe["clip_model"]))
    recipe = describe.get("recipe")
    recipe = recipe.get("name") if isinstance(recipe, dict) else recipe
    if recipe and recipe != "default":
        parts.append(f"{recipe} recipe")
    return ", ".join(parts) or None


def method_label(name: str, describe: dict[str, Any] | None) -> str:
    model = model_label(describe)
    return f"{name} ({model})" if model and model != name else name


def dataset_label(doc: dict) -> str:
    """The data a results file scored: the dataset's name, with its unseen classes when the run
    chose them (``--unseen-classes``): another split is another benchmark, never the same column."""
    name = str(doc.get("dataset", {}).get("name", "?"))
    unseen = doc.get("config", {}).get("unseen_classes")
    return f"{name} (unseen: {unseen})" if unseen else name


def _cpu(doc: dict) -> tuple[str, list[str]]:
    """``CPU <model>`` and what tells two CPUs of one model name apart ("AMD EPYC" can differ in
    what it runs natively: imsim.hardware): kernel level and native precisions, when recorded."""
    env = doc.get("env", {})
    caps = env.get("hardware", {}).get("cpu")
    kind = [str(caps.get("isa")), f"native {'/'.join(caps.get('native', []))}"] if caps else []
    return f"CPU {env.get('cpu', '?')}", kind


def machine_label(doc: dict) -> str:
    """The machine a results file ran on: its GPU, else its CPU (see :func:`_cpu`)."""
    gpu = doc.get("backend", {}).get("gpu")
    if gpu:
        return gpu
    name, kind = _cpu(doc)
    return f"{name} ({', '.join(kind)})" if kind else name


def device_label(doc: dict) -> str:
    """:func:`machine_label` with the CPU thread count (speeds depend on it)."""
    gpu = doc.get("backend", {}).get("gpu")
    if gpu:
        return gpu
    name, kind = _cpu(doc)
    threads = f"{doc.get('env', {}).get('torch_threads', '?')} threads"
    return f"{name} ({', '.join([*kind, threads])})"
