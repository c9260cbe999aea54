"""The gradient of a training step, eager or compiled (`--compile`, a protocol field).

A step's gradient is `method.loss` → backward. Compiled, it is one function of the parameters,
`torch.func.grad_and_value` over `functional_call`, given to `torch.compile(fullgraph=True)`; the
optimizer step stays outside it. The buffers (the model's and the method's own modules') are inputs of
that function too: BatchNorm updates its running statistics in place, which `torch.func.grad` refuses
for a captured tensor. Derivatives a loss takes itself are then `torch.func` transforms
(ssl_bench.functional: dninv's x̂ a `torch.func.vjp`, VAT's power iteration a `torch.func.grad`), since
`autograd.grad` does not compile; random numbers are drawn before the step (views, `random_tensors`). On
CUDA the function is compiled with `mode="reduce-overhead"` (CUDA graphs: the shapes of a run are static).
The optimizer step is compiled on its own (`optimizer_step`: Adam with float64 step counts, so that its
bias corrections are eager's; it falls back to eager with one warning line too).

What does not trace raises at its first call (`fullgraph=True`): that step and the rest of the run go
eager, with one warning line naming the model, the method and the reason. Known cases (docs/speed.md):
dninv's JVP form with dropout, dninv's per-layer term on a layer that runs twice in a forward, a plugin
whose loss draws from a `torch.Generator`.
The model itself is not wrapped, so its `state_dict` keys (checkpoints, resumable state) do not change.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from ssl_bench.functional import functional_transforms
from ssl_bench.method import Batch, Progress, SSLMethod
from ssl_bench.run.precision import autocast

BACKEND = "inductor"  # torch.compile's backend (tests use "aot_eager": the same tracing, no code generation)
STEP_SOURCE = r".*\.step$"  # Progress.step is symbolic from the first compilation (else it is recompiled at step 1)
Step = Callable[[Batch, Progress], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # sets .grad; (loss, logged terms)


def eager_gradients(model: nn.Module, method: SSLMethod, precision: str, device: torch.device) -> Step:
    """`method.loss` (under the precision's autocast), then `backward`: the parameters' `.grad`."""

    def step(batch: Batch, progress: Progress):
        with autocast(precision, device):
            loss, logged = method.loss(model, batch, progress)
        loss.backward()
        return loss, logged

    return step


class _Loss(nn.Module):
    """`method.loss` as a module holding the model, so that `functional_call` can swap its parameters and
    buffers; the method's own modules (e.g. Mean Teacher's EMA teacher, an attribute of the method) are
    submodules too, so that their buffers are inputs of the step as well."""

    def __init__(self, model: nn.Module, method: SSLMethod, precision: str, device: torch.device):
        super().__init__()
        self.model, self.method, self.precision, self.device = model, method, precision, device
        self.method_modules = nn.ModuleDict(method_modules(method))

    def forward(self, batch: Batch, progress: Progress):
        with autocast(self.precision, self.device):
            return self.method.loss(self.model, batch, progress)


class CompiledGradients:
    """A compiled `Step`, falling back to `eager_gradients` with one warning line if it does not compile.

    `first_call_s` is the wall time of the first call (compilation included); `fallback` the reason of
    a fallback, else None.
    """

    def __init__(
        self,
        model: nn.Module,
        method: SSLMethod,
        precision: str,
        device: torch.device,
        name: str,
        warn: Callable[[str], None],
    ):
        self.name, self.warn, self.device = name, warn, device
        self.eager = eager_gradients(model, method, precision, device)
        loss = _Loss(model, method, precision, device)  # after method.setup (which creates its modules)
        grad_fn = torch.func.grad_and_value(
            lambda params, buffers, batch, progress: torch.func.functional_call(
                loss, (params, buffers), (batch, progress)
            ),
            has_aux=True,
        )
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs for the static shapes of a run
        # a fresh cache per run: a sweep trains its runs one after another in one process, and Dynamo's recompile
        # limit counts per function
        torch._dynamo.reset()
        self.compiled = torch.compile(
            grad_fn, fullgraph=True, dynamic=False, mode=mode, backend=BACKEND
        )  # static shapes (but Progress.step, STEP_SOURCE)
        self.params = _slots(
            loss, [f"model.{n}" for n, p in model.named_parameters() if p.requires_grad]
        )  # the step's inputs, found once
        # buffers are inputs too: BatchNorm updates its running statistics in place, which a captured tensor cannot be
        # inside torch.func.grad
        self.buffers = _slots(loss, [n for n, _ in loss.named_buffers()])
        self.first_call_s: float | None = None
        self.fallback: str | None = None

    def __call__(self, batch: Batch, progress: Progress):
        if self.fallback is not None:
            return self.eager(batch, progress)
        params, buffers = _read(self.params), _read(self.buffers)
        start = time.perf_counter()
        try:
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
            with functional_transforms(), torch.compiler.config.patch(dynamic_sources=STEP_SOURCE):
                grads, (loss, logged) = self.compiled(params, buffers, batch, progress)
        except (
            torch._dynamo.exc.TorchDynamoException,
            torch._dynamo.exc.FailOnRecompileLimitHit,
            NotImplementedError,
        ) as exc:  # did not trace, compile, or recompiled too often
            self.fallback = reason(exc)
            self.warn(f"--compile: {self.name} runs eager ({self.fallback})")
            return self.eager(batch, progress)
        if self.first_call_s is None:
            self.first_call_s = time.perf_counter() - start
        for name, p in params.items():
            p.grad = grads[name]
        return loss, logged

    def record(self) -> dict:
        """What result.json says about the compiled step."""
        return {
            "compiled": self.fallback is None,
            "first_call_s": None if self.first_call_s is None else round(self.first_call_s, 3),
            "fallback": self.fallback,
        }


def method_modules(method: SSLMethod) -> dict[str, nn.Module]:
    """The method's own modules: its attributes that are `nn.Module`s (e.g. Mean Teacher's EMA teacher, made
    in `setup`). Their buffers are inputs of the compiled step, as the model's are."""
    return {k: v for k, v in vars(method).items() if isinstance(v, nn.Module)}


def _slots(root: nn.Module, names: list[str]) -> list[tuple[str, nn.Module, str]]:
    """`(name, owning module, attribute)` for dotted tensor names under `root`: a step reads the tensors
    through them (`_read`) instead of walking the modules every step (host time: docs/speed.md)."""
    return [(name, root.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]) for name in names]


def _read(slots: list[tuple[str, nn.Module, str]]) -> dict[str, torch.Tensor]:
    """`{name: tensor}` as the modules hold them now (a buffer reassigned during the run is read anew)."""
    return {name: getattr(module, attr) for name, module, attr in slots}


def reason(exc: BaseException) -> str:
    """The first line of why a step did not compile. Where the traced code itself raised, Dynamo says only
    "Observed exception"; the exception's type is then added (e.g. NotImplementedError). Where the backend
    (inductor) failed, the first line is "backend='inductor' raised:"; the backend's error is then added."""
    first_line = lambda e: str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(exc).__name__}: {first_line(exc)}"
    cause = exc.__cause__
    if cause is not None and type(cause).__name__.startswith("Observed"):
        text += f" ({type(cause).__name__.removeprefix('Observed')} raised in the traced code)"
    elif isinstance(exc, torch._dynamo.exc.BackendCompilerFailed):
        text += f" {type(exc.inner_exception).__name__}: {first_line(exc.inner_exception)}"
    return text


def optimizer_step(
    optimizer: torch.optim.Optimizer, compile: bool, name: str = "", warn: Callable[[str], None] = print
) -> Callable[[], None]:
    """The run's optimizer step: `optimizer.step`, or with `--compile` a `CompiledOptimizerStep`. Call it
    after `gradients` (which resets Dynamo's cache for the run)."""
    return CompiledOptimizerStep(optimizer, name, warn) if compile else optimizer.step


class CompiledOptimizerStep:
    """`optimizer.step` given to `torch.compile` (PyTorch's compiled-optimizer recipe: Adam's foreach
    operations fused by inductor), falling back to eager with one warning line if it does not compile.
    The learning rate, a Python float set every warm-up step, stays symbolic in Dynamo (floats are not
    specialized). Not CUDA graphs: Adam keeps its step counts on the CPU unless `capturable`.

    Compiled, Adam computes its bias corrections `1 − βᵗ` from its step-count tensors where eager Adam
    uses Python floats (float64): with float32 counts, `1 − 0.999ᵗ` is off by up to 6e-5 relative and every
    early update with it. So the counts are made float64 (`_float64_counts`), and the first step,
    which creates Adam's state (float32 counts), runs eager."""

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, warn: Callable[[str], None]):
        self.optimizer, self.name, self.warn = optimizer, name, warn
        self.compiled = torch.compile(optimizer.step, backend=BACKEND)
        self.fallback: str | None = None
        # the state dict (itself, not its id, which a new dict may reuse) and its size, whose counts are float64
        self._checked: tuple[dict, int] | None = None

    def __call__(self) -> None:
        if self.fallback is not None or not self._float64_counts():  # no state yet: this step creates it
            self.optimizer.step()
            return
        try:
            self.compiled()
        except (
            torch._dynamo.exc.TorchDynamoException,
            torch._dynamo.exc.FailOnRecompileLimitHit,
        ) as exc:  # did not trace or compile: nothing ran
            self.fallback = reason(exc)
            self.warn(f"--compile: {self.name}'s optimizer step runs eager ({self.fallback})")
            self.optimizer.step()

    def _float64_counts(self) -> bool:
        """Make the optimizer's step-count tensors float64 (kept where they are); False while a parameter
        with a gradient has no state yet (a compiled step would create float32 counts for it). Walked again
        only when the optimizer's state changed, another state dict (`load_state_dict`) or new entries:
        walking every parameter's state is host time on every step's path. A parameter whose first gradient
        comes after that has its state made by a compiled step (float32 counts, converted at the next)."""
        state = self.optimizer.state
        if self._checked is not None and self._checked[0] is state and self._checked[1] == len(state):
            return True
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if not state.get(p):
                    if p.grad is not None:
                        return False
                    continue
                step = state[p].get("step")
                if isinstance(step, torch.Tensor) and step.dtype != torch.float64:
                    state[p]["step"] = step.to(torch.float64)
        self._checked = (state, len(state))
        return True


def record(gradients: CompiledGradients, update: CompiledOptimizerStep) -> dict:
    """What result.json says about a compiled run's steps (`compiled_step`)."""
    return gradients.record() | {"optimizer_fallback": update.fallback}


def gradients(
    model: nn.Module,
    method: SSLMethod,
    precision: str,
    compile: bool,
    device: torch.device,
    name: str,
    warn: Callable[[str], None],
) -> Step:
    """The run's gradient step: eager, or compiled (with its eager fallback)."""
    if compile:
        return CompiledGradients(model, method, precision, device, name, warn)
    return eager_gradients(model, method, precision, device)
