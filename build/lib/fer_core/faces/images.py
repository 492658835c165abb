"""Reading user images robustly: paths, bytes, PIL images or numpy arrays -> (H, W, 3) uint8 RGB.

EXIF orientation is honoured; grayscale, RGBA, palette, 16-bit and float images are converted.
Only the formats in SUPPORTED_FORMATS are decoded, whatever the file name says, so an upload never reaches
Pillow's rarer decoders or Ghostscript (EPS). Every failure is an ImageLoadError with a message a user can act on.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .preprocessing import to_gray, to_uint8

MAX_PIXELS = 50_000_000  # larger images are refused rather than exhausting memory
MAX_BYTES = 50 * 1024 * 1024
# Pillow format names the app decodes (GIF: its first frame; PPM covers PGM/PBM too). Anything else, e.g. an EPS
# renamed .jpg, is "not an image file": it never reaches another decoder or an external program.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
SUPPORTED_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, TIFF, GIF, PPM/PGM"


class ImageLoadError(ValueError):
    """An input that cannot be read as an image (not an image, truncated, too large, ...)."""


def _intensity_peak(mode: str, lo: float, hi: float) -> float:
    """The value that means white in a single-channel image of ``mode`` whose values span [lo, hi]:
    65535 for 16-bit (or larger values), 1.0 for float images within [0, 1] (the usual float convention), else 255."""
    if mode.startswith("I;16") or hi > 255:
        return 65535.0
    if mode == "F" and 0.0 <= lo and hi <= 1.0:
        return 1.0
    return 255.0


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        peak = _intensity_peak(img.mode, lo, hi)
        arr = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8) if hi > lo or hi > 0 else arr.astype(np.uint8)
        return np.stack([arr] * 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"))


def load_image(source, channel_order: str = "RGB") -> np.ndarray:
    """Path / bytes / file-like / PIL image / numpy array -> (H, W, 3) uint8 RGB.

    ``channel_order`` tells how a 3- or 4-channel numpy array is ordered ("RGB" or "BGR", as OpenCV gives).
    """
    if isinstance(source, np.ndarray):
        gray_or_color = source
        if gray_or_color.ndim == 2 or (gray_or_color.ndim == 3 and gray_or_color.shape[2] == 1):
            g = to_gray(gray_or_color)
            return np.stack([g] * 3, axis=-1)
        if gray_or_color.ndim == 3 and gray_or_color.shape[2] in (3, 4):
            arr = np.ascontiguousarray(to_uint8(gray_or_color[:, :, :3]))
            return arr[:, :, ::-1].copy() if channel_order.upper().startswith("BGR") else arr
        raise ImageLoadError(f"Unsupported array shape {source.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    name = "image"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = path.name
        if not path.exists():
            raise ImageLoadError(f"{path}: file not found.")
        if not path.is_file():
            raise ImageLoadError(f"{path}: not a regular file (a folder, pipe or device); give an image file.")
        try:
            if path.stat().st_size > MAX_BYTES:
                raise ImageLoadError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB.")
            data = path.read_bytes()
        except OSError as e:  # no read permission, vanished meanwhile, I/O error
            raise ImageLoadError(f"{path}: cannot read the file ({e.strerror or e}).") from None
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        name = getattr(source, "name", name)
        data = source.read()
    else:
        raise ImageLoadError(f"Cannot read an image from a {type(source).__name__}.")
    if len(data) > MAX_BYTES:
        raise ImageLoadError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB.")
    if not data:
        raise ImageLoadError(f"{name}: the file is empty.")
    return _decode(data, name)


def _too_large(name: str, size: str) -> ImageLoadError:
    """The one "too large" error, whichever check (ours or Pillow's decompression-bomb limit) found it."""
    return ImageLoadError(f"{name}: {size} is too large (limit {MAX_PIXELS // 1_000_000} megapixels); "
                          f"scale it down and try again.")


def _decode(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes of a SUPPORTED_FORMATS image -> (H, W, 3) uint8 RGB; any failure is an ImageLoadError."""
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise _too_large(name, f"{img.width}x{img.height} pixels")
            img.load()
            return _pil_to_rgb(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit (~179 MP) is checked before ours can be
        size = _header_size(data)
        if size is not None and max(size) >= 2**31:  # a negative width or height read as unsigned
            raise ImageLoadError(f"{name}: the image is damaged (its header gives the impossible size "
                                 f"{size[0]}x{size[1]}).") from None
        raise _too_large(name, f"{size[0]}x{size[1]} pixels" if size else
                         f"an image of more than {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file, or a format that cannot be read "
                             f"(supported: {SUPPORTED_FORMATS_TEXT}).") from None
    except Exception as e:  # Pillow's decoders raise many types on bad data (RuntimeError, AttributeError, ...)
        raise ImageLoadError(f"{name}: the image is damaged or truncated ({type(e).__name__}: {e}).") from None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that the header of a SUPPORTED_FORMATS image states, read without Pillow's size limit
    (nothing is decoded); None when no supported format reads it."""
    for fmt in SUPPORTED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with factory(io.BytesIO(data)) as img:
                return img.size
        except Exception:  # noqa: BLE001 - not this format, or a header Pillow cannot read: try the next
            continue
    return None


def rotate_image(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` rolled by ``degrees`` (counter-clockwise) about its centre, on a canvas grown to hold all of it
    (the corners are filled with the nearest edge pixels). Used to test how the pipeline copes with tilted heads."""
    if degrees % 360 == 0:
        return image
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * sin + w * cos)), int(round(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
