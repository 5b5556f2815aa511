"""Every keyword the notebooks and helpers pass to TRL, PEFT and transformers exists in the pinned versions.

Library upgrades rename keywords (tokenizer= -> processing_class=, warmup_ratio -> warmup_steps); this
reads the code itself, so a notebook cannot drift silently.
"""
import ast
import inspect
import json
from pathlib import Path

import pytest
import transformers
import peft
import trl

from helpers.paths import REPO_ROOT

CHECKED = {
    "SFTConfig": trl.SFTConfig, "SFTTrainer": trl.SFTTrainer, "GRPOConfig": trl.GRPOConfig,
    "GRPOTrainer": trl.GRPOTrainer, "LoraConfig": peft.LoraConfig, "BitsAndBytesConfig": transformers.BitsAndBytesConfig,
    "TrainingArguments": transformers.TrainingArguments, "Trainer": transformers.Trainer,
    "Qwen2Config": transformers.Qwen2Config, "GgufConfig": getattr(transformers, "GgufConfig", None),
}
# libraries that only run on a GPU and are not installed here: their calls are listed, not checked
GPU_ONLY = {"FastLanguageModel.from_pretrained", "FastLanguageModel.get_peft_model", "LLM", "SamplingParams"}


# configs whose **kwargs only swallow legacy or internal keys: their named parameters are the real options
STRICT = {transformers.BitsAndBytesConfig, transformers.Qwen2Config, getattr(transformers, "GgufConfig", None)}


def accepted_keywords(target) -> set[str] | None:
    """The keywords a class or function accepts; None if it takes undeclared **kwargs (nothing to check)."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()) and target not in STRICT:
        return None
    return {name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD}


def code_sources() -> list[tuple[str, str]]:
    sources = [(str(p.relative_to(REPO_ROOT)), p.read_text()) for p in sorted((REPO_ROOT / "helpers").rglob("*.py"))]
    for notebook in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources.append((notebook.name, code))
    return sources


def calls():
    for where, source in code_sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else (
                    node.func.attr if isinstance(node.func, ast.Attribute) else None)
                label = ast.unparse(node.func)
                if name == "trainer_class":  # SFTTrainer, or on a CPU its subclass FullLogitsSFTTrainer
                    name = label = "SFTTrainer"
                if name in CHECKED or label in GPU_ONLY:
                    yield where, label, [k.arg for k in node.keywords if k.arg]


def test_the_training_notebooks_call_the_libraries_we_check():
    found = {name for _, name, _ in calls()}
    assert {"SFTConfig", "SFTTrainer", "LoraConfig", "BitsAndBytesConfig"} <= found


@pytest.mark.parametrize("where, name, keywords", list(calls()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_keyword_exists_in_the_pinned_version(where, name, keywords):
    if name in GPU_ONLY:
        pytest.skip(f"{name} belongs to a GPU-only library that is not installed here")
    target = CHECKED[name.split(".")[-1]]
    accepted = accepted_keywords(target)
    if accepted is None:
        return
    unknown = sorted(set(keywords) - accepted)
    assert not unknown, f"{where}: {name} does not accept {unknown} in the installed version"
