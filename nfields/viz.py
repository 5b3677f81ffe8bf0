"""Pictures a person looks at: PNGs of images, comparisons with error maps, learning curves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .io import write_bytes_atomic


def to_uint8(values: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> uint8 (H, W) for gray or (H, W, C)."""
    array = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


def png_bytes(values: np.ndarray) -> bytes:
    array = to_uint8(values)
    if array.ndim == 3 and array.shape[-1] == 2:  # gray + alpha
        mode = "LA"
    else:
        mode = None
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(values: np.ndarray, path: str | Path) -> None:
    """Write (H, W, C) values in [0, 1] as a PNG (or any format PIL knows by suffix), atomically."""
    path = Path(path)
    if path.suffix.lower() in ("", ".png"):
        write_bytes_atomic(path, png_bytes(values))
        return
    buffer = io.BytesIO()
    array = to_uint8(values)
    if path.suffix.lower() in (".jpg", ".jpeg") and array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    Image.fromarray(array).save(buffer, format=Image.registered_extensions()[path.suffix.lower()])
    write_bytes_atomic(path, buffer.getvalue())


def figure_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (for write_bytes_atomic); closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _display(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0, 1)
    if values.shape[-1] == 1:
        return values[..., 0]
    if values.shape[-1] == 2:  # gray + alpha: show gray
        return values[..., 0]
    return values


def save_comparison(target: np.ndarray, reconstruction: np.ndarray, path: str | Path,
                    title: str = "", mask: np.ndarray | None = None) -> None:
    """Target | reconstruction | absolute error (mean over channels), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    error = np.abs(np.clip(reconstruction, 0, 1) - target).mean(-1)
    panels = [("target", _display(target)), ("reconstruction", _display(reconstruction))]
    if mask is not None:
        panels.insert(1, ("training pixels", _display(target) * mask[..., None] if target.shape[-1] >= 3
                          else _display(target) * mask))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 4.3))
    for ax, (name, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
    shown = axes[-1].imshow(error, cmap="inferno", vmin=0, vmax=max(float(error.max()), 1e-3))
    axes[-1].set_title("|error|")
    fig.colorbar(shown, ax=axes[-1], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    write_bytes_atomic(path, figure_bytes(fig))


def save_grid(rows, row_titles: list[str], path: str | Path, title: str = "", captions=None,
              column_titles: list[str] | None = None, colormap_from: int | None = None) -> None:
    """A grid of (H, W, C) images in [0, 1]: `rows[r][c]`, a title per row, optional captions per image
    (`captions[r]` a list or None) and per column; columns from `colormap_from` on are drawn as heat maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols + 1.2, 1.75 * n_rows + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            image = _display(np.asarray(row[c]))
            heat = colormap_from is not None and c >= colormap_from
            ax.imshow(image, cmap="inferno" if heat else ("gray" if image.ndim == 2 else None), vmin=0, vmax=1,
                      interpolation="nearest")
            if captions is not None and captions[r] is not None:
                ax.set_xlabel(captions[r][c], fontsize=7)
            if r == 0 and column_titles:
                ax.set_title(column_titles[c], fontsize=8)
        axes[r][0].set_ylabel(row_titles[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    write_bytes_atomic(path, figure_bytes(fig))


def save_curve(train: list[dict], evals: list[dict], path: str | Path, title: str = "") -> None:
    """PSNR against step and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, x in zip(axes, ("step", "seconds")):
        if train and "psnr" in train[0]:
            ax.plot([p[x] for p in train], [p["psnr"] for p in train], label="training pixels (unclamped)", lw=1)
        if evals:
            ax.plot([p[x] for p in evals], [p["psnr"] for p in evals], "o-", label="evaluation (clamped)", ms=3)
        ax.set_xlabel(x if x == "step" else "training time (s)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    write_bytes_atomic(path, figure_bytes(fig))


def save_histogram(values: np.ndarray, path: str | Path, title: str, xlabel: str, ylabel: str = "count",
                   marker: float | None = None, marker_label: str = "") -> None:
    """A histogram of `values`, with an optional dashed vertical line at `marker`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(50, max(5, len(values) // 10)), color="tab:blue")
    if marker is not None:
        ax.axvline(marker, color="tab:red", linestyle="--", label=marker_label)
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    write_bytes_atomic(path, figure_bytes(fig))


def save_audio_comparison(target: np.ndarray, reconstruction: np.ndarray, rate: int, path: str | Path,
                          title: str = "") -> None:
    """Waveforms (target and reconstruction overlaid, then the error) and both spectrograms, of the
    first channel; (N, C) samples in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = target[:, 0], reconstruction[:, 0]
    seconds = np.arange(len(x)) / rate
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), constrained_layout=True)
    axes[0].plot(seconds, x, lw=0.5, label="target")
    axes[0].plot(seconds, y, lw=0.5, alpha=0.7, label="reconstruction")
    axes[0].legend(loc="upper right")
    axes[1].plot(seconds, y - x, lw=0.5, color="tab:red")
    for ax, name in zip(axes[:2], ("waveform", "error (reconstruction - target)")):
        ax.set_title(name)
        ax.set_xlim(0, seconds[-1] if len(x) > 1 else 1)
    nfft = int(min(1024, max(16, 2 ** np.floor(np.log2(max(len(x) // 8, 16))))))
    floor = 10 * np.log10(max(float((x ** 2).mean()), 1e-12)) - 90  # dB: the spectrogram's colour floor
    for ax, signal, name in ((axes[2], x, "target spectrogram"), (axes[3], y, "reconstruction spectrogram")):
        ax.specgram(signal, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma", vmin=floor, vmax=floor + 110)
        ax.set_title(name)
        ax.set_ylabel("Hz")
    axes[3].set_xlabel("seconds")
    if title:
        fig.suptitle(title + ("" if target.shape[1] == 1 else f" (channel 1 of {target.shape[1]})"))
    write_bytes_atomic(path, figure_bytes(fig))
