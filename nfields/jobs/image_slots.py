"""One independent field per image, K images at a time: the stacked weights of K fields evaluated with
torch.func.vmap, a pool of K slots refilled with the next image whenever one finishes, and every image's
result. All of it is a parameter or a buffer of one module, so the Trainer's checkpoints save and resume
a batched fit whole."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..data.grid import pixel_grid
from ..errors import NfieldsError
from ..fields import FIELDS, Field, make_field
from ..kernels import set_kernel
from ..metrics import mse_to_psnr
from ..train.slot_adam import SlotAdam
from .image_objectives import encode_values

if TYPE_CHECKING:
    from .fit_images import FitImagesConfig

Layout = list[tuple[str, tuple[int, ...]]]  # state_dict name and shape, in the order they are flattened


def flatten(tensors: dict[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    """The tensors named in `layout`, concatenated into one vector."""
    return torch.cat([tensors[name].reshape(-1) for name, _ in layout]) if layout else torch.zeros(0)


def unflatten(vectors: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """(..., P) vectors -> {name: (..., *shape)}: views where the memory allows."""
    out, start = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = vectors[..., start:start + size].reshape(*vectors.shape[:-1], *shape)
        start += size
    return out


class FieldStack(nn.Module):
    """K fields of one architecture as a (K, P) weight matrix and (K, B) persistent buffers (e.g. the random
    matrix of Fourier features), and the bookkeeping of K slots over N images: the image each slot holds
    (-1: none), its steps so far, the next image to take, and every finished image's weights, PSNR and steps.
    The slots' tensors live on `device`; the bookkeeping and the results (N can be large) on the CPU."""

    def __init__(self, template: Field, slots: int, images: int, device: torch.device):
        super().__init__()
        params = dict(template.named_parameters())
        state = template.state_dict()
        for name, tensor in state.items():
            if tensor.dtype != torch.float32:
                raise NfieldsError(f"field '{template.registry_name}' holds {tensor.dtype} state ('{name}'); "
                                   f"batched fitting stacks float32 fields only.")
        self.weight_layout: Layout = [(k, tuple(v.shape)) for k, v in state.items() if k in params]
        self.buffer_layout: Layout = [(k, tuple(v.shape)) for k, v in state.items() if k not in params]
        weights, buffers = (sum(math.prod(s) for _, s in layout) for layout in (self.weight_layout,
                                                                                self.buffer_layout))
        self.weights = nn.Parameter(torch.zeros(slots, weights, device=device))
        self.register_buffer("slot_buffers", torch.zeros(slots, buffers, device=device))
        self.register_buffer("slot_image", torch.full((slots,), -1, dtype=torch.long))
        self.register_buffer("slot_steps", torch.zeros(slots, dtype=torch.long))
        self.register_buffer("next_image", torch.zeros((), dtype=torch.long))
        self.register_buffer("done", torch.zeros(images, dtype=torch.bool))
        self.register_buffer("psnr", torch.zeros(images))
        self.register_buffer("steps", torch.zeros(images, dtype=torch.long))
        self.register_buffer("fitted_weights", torch.zeros(images, weights))
        self.register_buffer("fitted_buffers", torch.zeros(images, buffers))

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Every image's field state: {state_dict name: (N, *shape)}."""
        return {**unflatten(self.fitted_weights, self.weight_layout),
                **unflatten(self.fitted_buffers, self.buffer_layout)}


class ImageSlotsObjective:
    """Fit `images` (uint8 (N, H, W, C)) one field each, K at a time.

    The loss is the sum over slots of each slot's mean squared error (in the field's [-1, 1] range, as
    ImageObjective), so each slot's gradient is its own image's alone. Image i starts from the field built
    after torch.manual_seed(seed + i), whatever K and whichever slot it lands in. A check (one forward without
    gradients, and the one host sync) runs every `check_every` steps when there is a target PSNR, and at the
    step a slot's budget runs out: slots whose image reached the target or its budget store their weights and
    PSNR and take the next image, with fresh weights and Adam moments, before that step trains. So an image
    stops after a multiple of `check_every` steps or its whole budget, whatever K.
    """

    def __init__(self, images: torch.Tensor, config: FitImagesConfig, device: torch.device):
        count, height, width, channels = images.shape
        self.config = config
        self.device = device
        self.budget = config.steps
        self.channels = channels
        self.images = images.reshape(count, -1, channels).to(device)  # uint8: a quarter of float32's memory
        self._field_class, self._field_config = FIELDS.lookup(config.field)[0], config.field_config()
        self.template = make_field(config.field, 2, channels, **config.field_options).to(device)
        set_kernel(self.template, "torch", device)  # vmap needs the PyTorch path, not fused kernels
        self.model = FieldStack(self.template, min(config.batch, count), count, device)
        self.optimizer = self._make_optimizer()
        self._coords = pixel_grid(height, width, config.coords).reshape(-1, 2).to(device)
        self._batched = vmap(self._one_field)
        self._check_vmap()
        self._targets = torch.zeros(len(self.model.weights), height * width, channels, device=device)
        self._step = 0
        self._checked = False  # whether this step ran a check (the next one is scheduled after it)
        self._fill(list(range(len(self.model.weights))))
        self._stale = True  # host-side state is read from the buffers before the next step
        self.model.register_load_state_dict_post_hook(lambda module, keys: setattr(self, "_stale", True))

    # -- the fields --------------------------------------------------------------------------------
    def _one_field(self, weights: torch.Tensor, buffers: torch.Tensor) -> torch.Tensor:
        state = {**unflatten(weights, self.model.weight_layout), **unflatten(buffers, self.model.buffer_layout)}
        return functional_call(self.template, state, (self._coords,))

    def _check_vmap(self) -> None:
        """One clear sentence, before any training, for a field that vmap cannot batch."""
        weights, buffers = self._initial(0)
        probe = torch.stack([weights, weights]).to(self.device).requires_grad_(True)
        coords, self._coords = self._coords, self._coords[:4]
        try:
            self._batched(probe, torch.stack([buffers, buffers]).to(self.device)).sum().backward()
        except Exception as error:  # vmap raises several types for operations it cannot batch
            raise NfieldsError(f"field '{self.config.field}' cannot be batched with torch.func.vmap "
                               f"({str(error).splitlines()[0]}); fit its images one at a time with "
                               f"'nfields fit image'.") from None
        finally:
            self._coords = coords

    def _make_optimizer(self) -> SlotAdam:
        """The field's own Adam settings (its lr, betas and eps), with per-slot state."""
        lr = self.config.lr or self.template.default_lr
        reference = self.template.make_optimizer(lr)
        if not isinstance(reference, torch.optim.Adam) or reference.defaults.get("weight_decay") or \
                reference.defaults.get("amsgrad"):
            raise NfieldsError(f"field '{self.config.field}' trains with {type(reference).__name__} settings that "
                               f"batched fitting does not have (it runs plain Adam per slot).")
        return SlotAdam([self.model.weights], lr, reference.defaults["betas"], reference.defaults["eps"])

    def _initial(self, image: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image `image`'s initial weights and buffers, flattened; the global RNG is left as it was."""
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone: the draws of torch.manual_seed, without its ~100 us for other devices.
            torch.default_generator.manual_seed(self.config.seed + image)
            state = self._field_class(2, self.channels, self._field_config).state_dict()
        return flatten(state, self.model.weight_layout), flatten(state, self.model.buffer_layout)

    # -- the slots ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _fill(self, slots: list[int]) -> None:
        """Give `slots` the next images (fresh weights, steps and Adam state), or empty them when none are left."""
        model = self.model
        start = int(model.next_image)
        images = list(range(start, min(start + len(slots), len(model.done))))
        filled = torch.tensor(slots[:len(images)], dtype=torch.long)
        if images:
            weights, buffers = zip(*(self._initial(i) for i in images))
            index = filled.to(self.device)
            model.weights.index_copy_(0, index, torch.stack(weights).to(self.device))
            model.slot_buffers.index_copy_(0, index, torch.stack(buffers).to(self.device))
            self._targets[index] = encode_values(self.images[images].float() / 255)
        model.next_image += len(images)
        index = torch.tensor(slots, dtype=torch.long)
        model.slot_image[index] = torch.tensor(images + [-1] * (len(slots) - len(images)), dtype=torch.long)
        model.slot_steps[index] = 0
        self.optimizer.reset(index)
        self._set_training(model.slot_image >= 0)

    @torch.no_grad()
    def _pack(self) -> None:
        """Move the occupied slots to the front, so steps compute only them once the images run out."""
        model = self.model
        occupied = model.slot_image >= 0
        count = int(occupied.sum())
        self._active = max(1, count)  # slots a step computes (one idle slot rather than an empty batch)
        if occupied[:count].all():
            return
        order = torch.cat([occupied.nonzero(), (~occupied).nonzero()]).squeeze(1)  # stable: slot order kept
        on_device = order.to(self.device)
        for tensor in (model.weights, model.slot_buffers, self._targets):
            tensor.copy_(tensor[on_device])
        for tensor in (model.slot_image, model.slot_steps):
            tensor.copy_(tensor[order])
        self.optimizer.reorder(order)
        self._set_training(model.slot_image >= 0)

    def _set_training(self, training: torch.Tensor) -> None:
        self._training = training  # (K,) bool on the CPU: the slots this step trains
        self._mask = training.to(self.device, torch.float32)

    def _schedule(self, step: int) -> None:
        """The next check: the next multiple of check_every (with a target PSNR), or the first budget to run out."""
        occupied = self.model.slot_image >= 0
        if not occupied.any():
            self._next_check = step
            return
        left = max(0, int((self.budget - self.model.slot_steps[occupied]).min()))
        self._next_check = step + left
        if self.config.target_psnr:
            self._next_check = min(self._next_check, step + (-step) % self.config.check_every)

    def _read_state(self, step: int) -> None:
        """The host-side state (targets, training mask, next check) from the buffers: at the start and on resume."""
        model = self.model
        self._targets = encode_values(self.images[model.slot_image.clamp(min=0).to(self.device)].float() / 255)
        self._set_training(model.slot_image >= 0)
        self._pack()
        self._schedule(step)
        self._stale = False

    @torch.no_grad()
    def _check(self) -> None:
        """Store the slots whose image reached the target PSNR or its budget, and refill them."""
        model = self.model
        active = self._active
        outputs = self._batched(model.weights[:active], model.slot_buffers[:active])
        error = ((outputs.clamp(-1, 1) - self._targets[:active]) ** 2).mean((1, 2))
        psnr = torch.zeros(len(model.slot_image))  # /4 below: [-1, 1] -> [0, 1]; clamped as rendering does
        psnr[:active] = mse_to_psnr(error / 4).cpu()
        occupied = model.slot_image >= 0
        finished = occupied & (model.slot_steps >= self.budget)
        if self.config.target_psnr:
            finished |= occupied & (psnr >= self.config.target_psnr)
        slots = finished.nonzero().squeeze(1)
        if len(slots):
            images = model.slot_image[slots]
            on_device = slots.to(self.device)
            model.fitted_weights[images] = model.weights.detach()[on_device].cpu()
            model.fitted_buffers[images] = model.slot_buffers[on_device].cpu()
            model.psnr[images] = psnr[slots]
            model.steps[images] = model.slot_steps[slots]
            model.done[images] = True
            self._fill(slots.tolist())
            self._pack()

    # -- the Objective protocol ----------------------------------------------------------------------
    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._stale:
            self._read_state(step)
        self._step = step
        self._checked = step >= self._next_check
        if self._checked:
            self._check()
        active, mask = self._active, self._mask[:self._active]  # the occupied slots: all K until images run out
        outputs = self._batched(self.model.weights[:active], self.model.slot_buffers[:active])  # (active, H*W, C)
        error = ((outputs - self._targets[:active]) ** 2).mean((1, 2))
        psnr = mse_to_psnr(error.detach() / 4)
        return (error * mask).sum(), {"psnr": (psnr * mask).sum() / mask.sum().clamp(min=1)}

    def after_step(self) -> None:
        self.model.slot_steps += self._training
        if self._checked:
            self._schedule(self._step + 1)

    def finished(self) -> bool:
        return bool(self.model.done.all())  # a CPU buffer: no device sync

    def postfix(self) -> dict[str, str]:
        return {"fitted": f"{int(self.model.done.sum())}/{len(self.model.done)}"}

    def evaluate(self) -> dict[str, float]:
        done = self.model.done
        metrics = {"fitted": float(done.sum())}
        if done.any():
            metrics["psnr"] = float(self.model.psnr[done].mean())
        return metrics
