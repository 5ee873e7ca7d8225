"""A vramplan plan as the exporters see it: the run, how it is spread, and the training settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..plan_file import parallel_from_plan, run_from_plan
from ..sharding import ParallelPlan
from ..specs import RunConfig
from .common import method_parts


@dataclass(frozen=True)
class ExportPlan:
    model: str
    run: RunConfig
    grad_accum: int
    targets: tuple[str, ...]  # the module names the adapter wraps (what the tools' configs list)
    parallel: ParallelPlan | None
    learning_rate: float
    epochs: float
    lr_scheduler: str
    warmup_ratio: float
    use_rslora: bool
    dataset: str | None = None

    @property
    def adapter(self) -> str | None:
        return method_parts(self.run.method)[0]

    @property
    def quantized(self) -> bool:
        return method_parts(self.run.method)[1]

    @property
    def gpus(self) -> int:
        return self.parallel.gpus if self.parallel else 1

    def require_peft_adapter(self, tool: str) -> None:
        """The tools export PEFT LoRA/DoRA or full fine-tuning; other adapters have no key there.

        Raises:
            ConfigError: the method's adapter is not LoRA or DoRA.
        """
        if self.adapter not in (None, "lora", "dora"):
            title = self.run.method_record.title
            raise ConfigError(f"--export {tool}: {tool} has no {title} adapters (it trains PEFT LoRA/DoRA or the full model); "
                              "recommend with --method full,lora,qlora,dora,qdora")

    def launch_note(self, command: str) -> str:
        """How to start it on the planned number of GPUs (no tool config holds that number)."""
        if self.gpus == 1:
            return command
        return f"accelerate launch --num_processes {self.gpus} " + command.removeprefix("accelerate launch ")


def export_plan(plan: dict, dataset: str | None = None) -> ExportPlan:
    """The plan document (`plan_file.plan_document`) read for an export.

    Raises:
        ConfigError: the plan lacks what a run needs.
    """
    run = run_from_plan(plan, "plan")
    config = plan["config"]
    targets = config.get("targets")
    names = tuple(targets) if isinstance(targets, (list, tuple)) and targets else run.targets
    return ExportPlan(
        model=str(plan["model"]), run=run, grad_accum=int(config.get("grad_accum") or 1), targets=names,
        parallel=parallel_from_plan(plan, "plan"), learning_rate=float(config.get("learning_rate") or run.method_record.lr),
        epochs=float(config.get("epochs") or 1), lr_scheduler=str(config.get("lr_scheduler") or "cosine"),
        warmup_ratio=float(config.get("warmup_ratio") if config.get("warmup_ratio") is not None else 0.03),
        use_rslora=bool(config.get("use_rslora", False)), dataset=dataset,
    )
