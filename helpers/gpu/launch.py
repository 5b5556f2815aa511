"""Train on several GPUs with the notebooks' own code: `python -m helpers.gpu.launch --profile NAME --notebook 02`.

The notebook becomes a script with the profile's values injected exactly as papermill injects them (its
`parameters` cell followed by papermill's own injected cell), and `accelerate launch` runs that script in one
process per GPU with one of the configurations in helpers/gpu/accelerate/ (DDP, FSDP2, DeepSpeed ZeRO-3).
Every cell runs on every process, as in any accelerate script: the trainers split the batches and
synchronise, `trainer.save_model` gathers sharded weights. Cells tagged `main-process` (they only write
files or show results) run on the main process alone.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from helpers import paths
from helpers.course.pipeline import PipelineError, notebook_parameters, parse_overrides, plan_run
from helpers.course.profiles import ProfileError, display_path
from helpers.gpu.settings import SettingsError, check_gpu_settings

CONFIGS_DIR = Path(__file__).resolve().parent / "accelerate"
TRAINING_NOTEBOOKS = ("02", "03", "04")
SHARDED = ("FSDP", "DEEPSPEED")  # accelerate distributed types whose ranks each hold part of the weights
MAIN_PROCESS_TAG = "main-process"


class LaunchError(PipelineError):
    """The launch cannot start as asked; the message is one sentence saying what to do."""


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def resolve_config(name: str) -> Path:
    """A config of helpers/gpu/accelerate/ by name (ddp, fsdp2, zero3, cpu-ddp), or the path of a YAML file,
    checked by accelerate's own config loader."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = CONFIGS_DIR / f"{name}.yaml" if name in available_configs() else Path(name)
    if not path.is_file():
        raise LaunchError(f"Unknown accelerate config '{name}': choose one of {', '.join(available_configs())}, "
                          f"or give the path of an accelerate YAML file.")
    try:
        load_config_from_file(str(path))
    except (ValueError, TypeError, KeyError) as error:
        raise LaunchError(f"accelerate cannot read {display_path(path)} ({error}): fix the file, "
                          f"or start from one in {display_path(CONFIGS_DIR)}/.") from None
    return path


def notebook_script(notebook: Path, parameters: dict) -> str:
    """The notebook's code cells as one script, its parameters injected as papermill injects them."""
    # papermill's own reader and parameterizer, as papermill.execute_notebook uses them
    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters, kernel_name="python3",
                               language="python")
    parts = ["import matplotlib\nmatplotlib.use('Agg')  # no display: figures are saved, not shown\n",
             "from helpers.devices import is_main_process as _is_main_process\n"]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        magic = next((line for line in cell.source.splitlines() if line.lstrip().startswith(("%", "!"))), None)
        if magic is not None:
            raise LaunchError(f"Cell {index} of {notebook.name} uses IPython syntax ({magic.strip()}), which a "
                              f"script cannot run: write it as Python.")
        source = cell.source
        if MAIN_PROCESS_TAG in cell.metadata.get("tags", []):
            source = "if _is_main_process():\n" + textwrap.indent(source, "    ") + "\n    pass"
        parts.append(f"# cell {index}\n{source}\n")
    return "\n".join(parts)


def visible_gpu_count() -> int:
    """The GPUs this launch can use (CUDA_VISIBLE_DEVICES respected): one process each."""
    import torch

    from helpers.devices import why_no_gpu

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise LaunchError(f"No GPU to launch on: {why_no_gpu()} (--accelerate-config cpu-ddp runs the same launch on "
                          f"2 CPU processes).")
    return count


def launch_command(config: Path, script: Path, num_processes: int | None) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    if num_processes:
        command += ["--num_processes", str(num_processes)]
    return command + [str(script)]


def vllm_server_command(params: dict) -> str | None:
    """For GRPO with `vllm_mode: server`: the `vllm serve` command TRL's trainer expects (built by TRL itself),
    serving the model 04_grpo starts from; None when the profile generates in the training processes."""
    if not (params.get("use_vllm") and params.get("vllm_mode") == "server"):
        return None
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    from helpers.devices import device_plan

    plan = device_plan()
    arguments = ScriptArguments(model=str(paths.RESULTS_DIR / params["profile"] / "models" / "sft_full"),
                                tensor_parallel_size=params.get("vllm_tensor_parallel_size", 1),
                                dtype=plan.vllm_dtype if plan.on_gpu else "auto")
    return "VLLM_SERVER_DEV_MODE=1 " + " ".join(build_command(arguments))


def prepare(profile: str, notebook: str, config: str, overrides: dict | None = None,
            num_processes: int | None = None) -> tuple[list[str], Path, str | None]:
    """Check everything, write the script; returns the command to run, the script's path and, for GRPO in
    vLLM server mode, the command that starts the server."""
    params, notebooks = plan_run(profile, None, [notebook], overrides)
    check_gpu_settings(**params)
    (chosen,) = notebooks
    if chosen.stem[:2] not in TRAINING_NOTEBOOKS:
        raise LaunchError(f"{chosen.stem} does not train a model: launch one of the training notebooks "
                          f"({', '.join(TRAINING_NOTEBOOKS)}) and run the others with `python -m helpers`.")
    if num_processes is not None and num_processes < 1:
        raise LaunchError(f"--num-processes must be 1 or more, not {num_processes}.")
    config_path = resolve_config(config)
    config_values = yaml.safe_load(config_path.read_text())
    if config_values.get("distributed_type") in SHARDED and chosen.stem[:2] != "02":
        raise LaunchError(f"{chosen.stem} trains an adapter or merges one in memory, which needs a whole model on "
                          f"each GPU: launch it with --accelerate-config ddp (fsdp2 and zero3 are for 02).")
    if num_processes is None and not config_values.get("use_cpu"):
        num_processes = visible_gpu_count()
    script = paths.results_dir(profile) / "launch" / f"{chosen.stem}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(notebook_script(chosen, notebook_parameters(chosen, params)), encoding="utf-8")
    return launch_command(config_path, script, num_processes), script, vllm_server_command(params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.gpu.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="profile name in notebooks/profiles/")
    parser.add_argument("--notebook", required=True, help="the training notebook: 02, 03 or 04")
    parser.add_argument("--accelerate-config", default="ddp",
                        help=f"one of {', '.join(available_configs())} or a YAML file (default ddp)")
    parser.add_argument("--num-processes", type=int,
                        help="processes; default: one per visible GPU (cpu-ddp: the config's 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="replace a profile value for this run (repeatable)")
    parser.add_argument("--print-only", action="store_true", help="write the script, print the command, stop")
    args = parser.parse_args(argv)
    try:
        command, script, server = prepare(args.profile, args.notebook, args.accelerate_config,
                                          parse_overrides(args.overrides), args.num_processes)
    except (ProfileError, PipelineError, SettingsError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"script: {display_path(script)}\ncommand: {' '.join(command)}", flush=True)
    if server:
        print("GRPO generates in a vLLM server: start it first on GPUs the training does not use, e.g.\n"
              f"  CUDA_VISIBLE_DEVICES=<its GPUs> {server}", flush=True)
    if args.print_only:
        return 0
    # The script imports helpers like the notebooks do, from the notebooks folder (notebooks/helpers links it).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.REPO_ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, cwd=paths.NOTEBOOKS_DIR, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
