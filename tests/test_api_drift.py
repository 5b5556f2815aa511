"""Every keyword the notebooks and helpers pass to TRL, PEFT, transformers, vLLM and unsloth exists in the pinned versions.

Library upgrades rename keywords (tokenizer= -> processing_class=, warmup_ratio -> warmup_steps); this
reads the code itself, so a notebook cannot drift silently. TRL, PEFT and transformers are checked against
their installed signatures. vLLM and unsloth only install on a CUDA machine: their signatures were read from
the source of the pinned wheels and recorded in tests/fixtures/gpu_api/signatures.json (its record.py
re-reads them when a pin changes).
"""
import ast
import inspect
import json
import re
from pathlib import Path

import peft
import pytest
import transformers
import trl

from helpers.devices import DevicePlan
from helpers.gpu.requirement_sets import VLLM as VLLM_SET, pins
from helpers.paths import REPO_ROOT

GPU_API = json.loads((Path(__file__).parent / "fixtures" / "gpu_api" / "signatures.json").read_text())
VLLM, UNSLOTH = GPU_API["vllm"], GPU_API["unsloth"]


def from_pretrained_keywords() -> set[str]:
    """PreTrainedModel.from_pretrained's named parameters and the options it pops from **kwargs."""
    method = transformers.PreTrainedModel.from_pretrained
    popped = re.findall(r'kwargs\.pop\(\s*"(\w+)"', inspect.getsource(method))
    return {n for n, p in inspect.signature(method).parameters.items() if p.kind is not p.VAR_KEYWORD} | set(popped)


def recorded(entry: dict, *more: dict) -> set[str]:
    names = set(entry.get("parameters", entry.get("fields", [])))
    for extra in more:
        names |= set(extra.get("fields", []))
    return names - {"self"}


CHECKED = {
    "SFTConfig": trl.SFTConfig, "SFTTrainer": trl.SFTTrainer, "GRPOConfig": trl.GRPOConfig,
    "GRPOTrainer": trl.GRPOTrainer, "LoraConfig": peft.LoraConfig, "BitsAndBytesConfig": transformers.BitsAndBytesConfig,
    "TrainingArguments": transformers.TrainingArguments, "Trainer": transformers.Trainer,
    "Qwen2Config": transformers.Qwen2Config, "GgufConfig": getattr(transformers, "GgufConfig", None),
    "prepare_model_for_kbit_training": peft.prepare_model_for_kbit_training,
    "PeftModel.from_pretrained": peft.PeftModel.from_pretrained,
}
# keyword sets that no installed signature gives: from_pretrained's **kwargs options, and the GPU-only libraries
KNOWN = {
    "AutoModelForCausalLM.from_pretrained": from_pretrained_keywords(),
    "LLM": recorded(VLLM["LLM.__init__"], VLLM["EngineArgs"]),  # LLM passes **kwargs on to EngineArgs
    "SamplingParams": recorded(VLLM["SamplingParams"]),
    "LoRARequest": recorded(VLLM["LoRARequest"]),
    "self.llm.chat": recorded(VLLM["LLM.chat"]),
    # unsloth's **kwargs would swallow a misspelt keyword: only its named parameters count
    "FastLanguageModel.from_pretrained": recorded(UNSLOTH["FastLanguageModel.from_pretrained"]),
    "FastLanguageModel.get_peft_model": recorded(UNSLOTH["FastLlamaModel.get_peft_model"]),
}

# configs whose **kwargs only swallow legacy or internal keys: their named parameters are the real options
STRICT = {transformers.BitsAndBytesConfig, transformers.Qwen2Config, getattr(transformers, "GgufConfig", None),
          peft.PeftModel.from_pretrained}


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
                if name == "trainer_class":  # SFTTrainer, or on a CPU its subclass ScoredLogitsSFTTrainer
                    name = label = "SFTTrainer"
                if label in KNOWN or label in CHECKED:
                    yield where, label, [k.arg for k in node.keywords if k.arg]
                elif name in CHECKED:
                    yield where, name, [k.arg for k in node.keywords if k.arg]


def test_the_code_calls_the_libraries_we_check():
    found = {name for _, name, _ in calls()}
    assert {"SFTConfig", "SFTTrainer", "LoraConfig", "BitsAndBytesConfig", "prepare_model_for_kbit_training",
            "PeftModel.from_pretrained", "AutoModelForCausalLM.from_pretrained", "LLM", "SamplingParams",
            "LoRARequest", "self.llm.chat", "FastLanguageModel.from_pretrained",
            "FastLanguageModel.get_peft_model"} <= found


@pytest.mark.parametrize("where, name, keywords", list(calls()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_keyword_exists_in_the_pinned_version(where, name, keywords):
    accepted = KNOWN[name] if name in KNOWN else accepted_keywords(CHECKED[name])
    if accepted is None:
        return
    unknown = sorted(set(keywords) - accepted)
    assert not unknown, f"{where}: {name} does not accept {unknown} in the pinned version"


def test_the_device_plan_passes_from_pretrained_only_options_it_has():
    for plan in (DevicePlan(), DevicePlan(gpu_count=1, capability=(7, 5), gpu_name="T4")):
        for kwargs in (plan.load_kwargs(), plan.load_kwargs(training=True, quantized=True)):
            assert set(kwargs) <= KNOWN["AutoModelForCausalLM.from_pretrained"]


def test_the_recorded_gpu_signatures_are_those_of_the_pinned_vllm():
    assert VLLM["version"] == dict((t.split("==")[0], t.split("==")[1]) for t, _ in pins(VLLM_SET))["vllm"]


def test_vllm_engine_shutdown_reaches_what_the_pinned_vllm_has():
    # VLLMEngine.shutdown: llm.llm_engine.engine_core.shutdown(), then cleanup_dist_env_and_memory()
    assert "llm_engine" in VLLM["LLM"]["attributes"] and "engine_core" in VLLM["LLMEngine"]["attributes"]
    assert "shutdown" in VLLM["EngineCoreClient"]["methods"]
    assert "cleanup_dist_env_and_memory" in VLLM["vllm/distributed/parallel_state.py"]["functions"]
    # LLM.chat takes the sampling parameters second and a LoRA request by name
    assert VLLM["LLM.chat"]["parameters"][1:3] == ["messages", "sampling_params"]
    assert {"lora_name", "lora_int_id", "lora_path"} <= set(VLLM["LoRARequest"]["fields"])


def test_trl_grpo_has_the_vllm_options_the_profiles_choose():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert {"use_vllm", "vllm_mode", "vllm_tensor_parallel_size", "vllm_gpu_memory_utilization",
            "vllm_server_base_url"} <= fields
