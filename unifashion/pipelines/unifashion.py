"""``UniFashion``: a trained model behind one object, loaded from a checkpoint folder.

    model = UniFashion.from_pretrained("runs/model")
    images = model.encode_images(["a.jpg", "b.jpg"])        # (N, Q, e)
    texts = model.encode_texts(["a red midi dress"])         # (M, e)
    scores = model.similarity(texts, images)                 # (M, N): max over the Q queries
    model.caption(["a.jpg"], style="title")
    model.generate(text="a red midi dress", seed=0)

A thin façade over the pipelines (``pipelines/retrieval.py``, ``captioning.py``, ``generation.py``):
the commands ``caption``, ``generate``, ``tryon`` and ``design`` call it, and the catalog and the
service encode through it, so the same inputs give the same numbers and pixels.
Only the retrieval part (vision encoder + Q-Former) is loaded up front; the caption head and
each image head are read from the folder the first time they are needed.

The checkpoint folder's layout is in ``unifashion/checkpoint.py``; folders holding pickle files
are refused before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.checkpoint import (
    CAPTION_FOLDER,
    HEAD_FOLDERS,
    RETRIEVAL_ENTRIES,
    TASKS,
    VAE_FOLDER,
    head_names,
    read_checkpoint_config,
    refuse_pickles,
    write_heads,
)
from unifashion.data.records import ImageRef
from unifashion.models.captioner import Captioner, Decoding, check_style
from unifashion.models.generator import Generator
from unifashion.models.qformer import max_over_queries
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines import retrieval as retrieval_pipeline
from unifashion.pipelines.captioning import caption_images
from unifashion.pipelines.generation import generate_images, inpaint_images, inpaint_inputs, load_image_head
from unifashion.utils.errors import DataError, UniFashionError
from unifashion.utils.hardware import resolve_device
from unifashion.utils.io import atomic_directory, copy_entries

ImageInput = str | os.PathLike | Image.Image | ImageRef


def _image_item(image: Any, where: str) -> ImageRef | Image.Image:
    """A path becomes an :class:`ImageRef`; PIL images and refs pass; anything else is an error naming ``where``."""
    if isinstance(image, Image.Image | ImageRef):
        return image
    if isinstance(image, str | os.PathLike):
        return ImageRef(os.fspath(image))
    raise DataError(f"{where}: expected a file path, a PIL image or an ImageRef, got {type(image).__name__}")


def _image_list(images: Any, what: str = "images") -> list[ImageRef | Image.Image]:
    if isinstance(images, str | os.PathLike | Image.Image | ImageRef):
        raise DataError(f"{what}: expected a list of images, got a single {type(images).__name__}")
    return [_image_item(im, f"{what}[{i}]") for i, im in enumerate(images)]


def _text_list(texts: Any, what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise DataError(f"{what}: expected a list of strings, got a single string")
    return list(texts)


@contextlib.contextmanager
def image_files(
    images: Sequence[ImageInput | None], names: Sequence[str] | None = None
) -> Iterator[list[ImageRef | None]]:
    """:class:`ImageRef` of each image (``None`` stays ``None``; ``names`` label them in errors). The
    caption and image heads read files, so in-memory PIL images are written as lossless PNGs to a
    temporary folder that lives as long as the ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="unifashion-") as tmp:
        refs: list[ImageRef | None] = []
        for i, image in enumerate(images):
            item = None if image is None else _image_item(image, names[i] if names else f"images[{i}]")
            if isinstance(item, Image.Image):
                path = Path(tmp) / f"{i}.png"
                item.save(path, format="PNG")
                item = ImageRef(str(path))
            refs.append(item)
        yield refs


def _pose_input(pose: str | os.PathLike | np.ndarray) -> str | np.ndarray:
    """A keypoints file (checked to exist, as the commands do) or an (18, 3) array."""
    if isinstance(pose, np.ndarray):
        return pose
    if not Path(pose).is_file():
        raise DataError(f"pose: no such file {os.fspath(pose)}")
    return os.fspath(pose)


def _automatic_mask(person: ImageInput, pose: str | np.ndarray, pose_format: str, garment: str) -> Image.Image:
    """The region to paint from the person's keypoints (``garment_mask``), as a white-on-black image."""
    from unifashion.data.pose import garment_mask, load_pose

    if isinstance(person, Image.Image):
        size = person.size
    elif isinstance(person, ImageRef):
        size = person.open().size
    else:
        with Image.open(person) as im:
            size = im.size
    kp = pose if isinstance(pose, np.ndarray) else load_pose(pose, pose_format, *size)
    return Image.fromarray((garment_mask(kp, *size, garment) * 255).astype(np.uint8))


def _repeat(n: int, seed: int, fn) -> list[Image.Image]:
    """``n`` results with seeds ``seed``, ``seed + 1``, ... (the commands' ``--num``)."""
    if n < 1:
        raise UniFashionError(f"n: expected at least 1 image, got {n}")
    out: list[Image.Image] = []
    for k in range(n):
        out += fn(seed + k)
    return out


class UniFashion:
    """A trained UniFashion model: retrieval, composed retrieval, captioning, generation, try-on, design.

    ``retrieval`` is the loaded :class:`RetrievalModel`; the heads are loaded on first use from
    ``source`` (the checkpoint folder), or given here when built in memory."""

    def __init__(
        self,
        retrieval: RetrievalModel,
        *,
        source: str | os.PathLike | None = None,
        captioner: Captioner | None = None,
        image_heads: dict[str, Generator] | None = None,
    ):
        self.retrieval = retrieval.eval()
        self.source = Path(source).absolute() if source is not None else None
        self._captioner = captioner
        self._image_heads: dict[str, Generator] = dict(image_heads or {})
        for task, head in self._image_heads.items():
            if task not in HEAD_FOLDERS or head.task != task:
                raise UniFashionError(
                    f"image_heads[{task!r}]: expected one of {', '.join(HEAD_FOLDERS)} "
                    f"holding a head of that task, got a {head.task} head"
                )
        self._meta: dict[str, Any] = {}
        self._cache: FeatureCache | None = None
        self.to(self.retrieval.qformer.device)  # heads given in memory join the retrieval model

    def to(self, device: str | torch.device | None) -> UniFashion:
        """Run on ``device`` ("auto", "cpu", "cuda", "cuda:N"): the loaded parts move now, heads
        loaded later follow. Inputs are moved to the model's device by every method."""
        self.device = resolve_device(device)
        self.retrieval.to(self.device)
        if self._captioner is not None:
            self._captioner.to(self.device)
        for head in self._image_heads.values():
            head.to(self.device)
        return self

    # -- loading and saving ----------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str | torch.device | None = "cpu") -> UniFashion:
        """The model in checkpoint folder ``path`` on ``device`` ("auto": a CUDA GPU when there is
        one); its heads are loaded when first used."""
        folder = Path(path)
        if not folder.is_dir():
            raise UniFashionError(f"{folder}: no such checkpoint folder")
        refuse_pickles(folder)
        meta = read_checkpoint_config(folder)  # names config.json when it is missing or malformed
        model = cls(RetrievalModel.from_pretrained(folder), source=folder)
        model._meta = meta
        return model.to(device)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint folder to ``path`` in one rename (a crash leaves any previous one
        intact). Loaded heads are written from memory; the others are copied from the source folder,
        as are its other entries (training logs). ``path`` may be the source folder."""
        path = Path(path)
        heads = set(self._meta.get("heads", ["retrieval"])) | {"retrieval"}
        heads |= head_names(self._captioner is not None, list(self._image_heads) or None)
        extra = {k: v for k, v in self._meta.items() if k not in ("model_type", "config")}
        extra["heads"] = sorted(heads)
        with atomic_directory(path) as tmp:
            # First, while the scratch folder is empty: this call replaces the folder it writes.
            self.retrieval.save_pretrained(tmp, extra=extra)
            vae = next(iter(self._image_heads.values())).vae if self._image_heads else None
            written = write_heads(tmp, captioner=self._captioner, vae=vae, image_heads=self._image_heads)
            if self.source is not None:
                copy_entries(self.source, tmp, skip={*RETRIEVAL_ENTRIES, *written})
        return path

    # -- heads -------------------------------------------------------------------

    def _has_folder(self, name: str) -> bool:
        return self.source is not None and (self.source / name).is_dir()

    @property
    def heads(self) -> tuple[str, ...]:
        """The tasks this model can do, among ``retrieval``, ``captioning``, ``text2image``, ``tryon``, ``design``."""
        have = {"retrieval"}
        if self._captioner is not None or self._has_folder(CAPTION_FOLDER):
            have.add("captioning")
        for task, sub in HEAD_FOLDERS.items():
            if task in self._image_heads or (self._has_folder(sub) and self._has_folder(VAE_FOLDER)):
                have.add(task)
        return tuple(t for t in TASKS if t in have)

    @property
    def captioner(self) -> Captioner:
        """The caption head (loaded on first use)."""
        if self._captioner is None:
            where = self.source if self.source is not None else "this model"
            if not self._has_folder(CAPTION_FOLDER):
                raise UniFashionError(
                    f"{where}: no caption head ({CAPTION_FOLDER}/); train one with "
                    f"`unifashion train captioning --model {where} --data DATA --out OUT`"
                )
            self._captioner = Captioner.from_pretrained(self.source / CAPTION_FOLDER).to(self.device)
        return self._captioner

    def load_heads(self) -> UniFashion:
        """Load every head the checkpoint has now rather than on first use (a server's first caption or
        picture then costs no loading time, which would hold up the requests behind it)."""
        for task in self.heads:
            if task == "captioning":
                _ = self.captioner
            elif task != "retrieval":
                self.image_head(task)
        return self

    def image_head(self, task: str) -> Generator:
        """The image head of ``task`` (``text2image``, ``tryon`` or ``design``), loaded on first use."""
        if task not in HEAD_FOLDERS:
            raise UniFashionError(f"image head: expected one of {', '.join(HEAD_FOLDERS)}, got {task!r}")
        if task not in self._image_heads:
            if self.source is None:
                raise UniFashionError(
                    f"this model: no {task} head; train one with "
                    f"`unifashion train generation --model MODEL --tasks {task} ...`"
                )
            self._image_heads[task] = load_image_head(self.source, task).to(self.device)
        return self._image_heads[task]

    @property
    def feature_cache(self) -> FeatureCache:
        """The on-disk cache of frozen image features the commands share."""
        if self._cache is None:
            self._cache = FeatureCache(self.retrieval.vision)
        return self._cache

    # -- retrieval ---------------------------------------------------------------

    def image_features(self, images: Sequence[ImageInput], *, progress: bool = False) -> torch.Tensor:
        """Frozen vision features (N, T, C) of ``images`` (float16, from the feature cache)."""
        return self.feature_cache.features(_image_list(images), progress=progress)

    def encode_images(
        self, images: Sequence[ImageInput], *, batch_size: int = 128, bf16: bool = True, progress: bool = False
    ) -> torch.Tensor:
        """Normalised query embeddings (N, Q, e) of ``images`` (file paths, PIL images or ImageRefs)."""
        feats = self.image_features(images, progress=progress)
        table = FeatureTable({str(i): i for i in range(feats.shape[0])}, feats)
        encoded = retrieval_pipeline.encode_images(
            self.retrieval, table, batch_size=batch_size, bf16=bf16, progress=progress
        )
        return encoded.embeds

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 128, bf16: bool = True) -> torch.Tensor:
        """Normalised text embeddings (N, e)."""
        return retrieval_pipeline.encode_texts(self.retrieval, _text_list(texts), batch_size=batch_size, bf16=bf16)

    def encode_composed(
        self, images: Sequence[ImageInput], texts: Sequence[str], *, batch_size: int = 64, bf16: bool = True
    ) -> torch.Tensor:
        """Normalised composed-query embeddings (N, e): reference image i modified by text i (Eq. 9's e_cls)."""
        texts = _text_list(texts)
        images = _image_list(images)
        if len(images) != len(texts):
            raise DataError(f"encode_composed: {len(images)} images for {len(texts)} texts (one text per image)")
        feats = self.feature_cache.features(images)
        return retrieval_pipeline.encode_composed(self.retrieval, feats, texts, batch_size=batch_size, bf16=bf16)

    @staticmethod
    def similarity(queries: torch.Tensor, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Scores (N_query, N_image) of text or composed embeddings (N_query, e) against image
        embeddings (N_image, Q, e): the best cosine over each image's Q queries (Eq. 3)."""
        return max_over_queries(image_embeddings, queries)

    # -- captioning --------------------------------------------------------------

    def caption(
        self,
        images: Sequence[ImageInput],
        style: str = "description",
        *,
        decoding: str = "greedy",
        max_new_tokens: int | None = None,
        num_beams: int = 4,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int = 0,
        batch_size: int = 16,
        bf16: bool = True,
    ) -> list[str]:
        """One caption per image, in ``style`` (``title``, ``description`` or ``attributes``, as far as
        the head was trained on it); the decoding arguments are those of ``unifashion caption``."""
        captioner = self.captioner
        check_style(style, captioner.styles)
        how = Decoding(
            mode=decoding,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        with image_files(_image_list(images)) as refs:
            return caption_images(
                self.retrieval, captioner, refs, style, how, batch_size=batch_size, bf16=bf16, cache=self.feature_cache
            )

    # -- images ------------------------------------------------------------------

    def generate(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        n: int = 1,
        bf16: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Image.Image]:
        """``n`` garment images (seeds ``seed``, ``seed + 1``, ...) from a text, a reference image, or
        both (composed: "this garment, but ..."). ``sampler`` (plms, ddim, dpm++), ``steps`` and
        ``guidance`` default to the head's own (``DiffusionConfig``: dpm++ with 20 steps in mini,
        plms with 50 in paper).
        ``on_step(done, total)`` reports each denoising step (of each of the ``n`` images in turn)."""
        if text is None and image is None:
            raise UniFashionError("generate: give a text, a reference image, or both")
        if text is not None and not isinstance(text, str):
            raise DataError(f"generate: text must be a string, got {type(text).__name__}")
        head = self.image_head("text2image")
        with image_files([image], ["image"]) as (ref,):
            return _repeat(
                n,
                seed,
                lambda s: generate_images(
                    self.retrieval,
                    head,
                    texts=None if text is None else [text],
                    images=None if ref is None else [ref],
                    sampler=sampler,
                    steps=steps,
                    guidance_scale=guidance,
                    seed=s,
                    bf16=bf16,
                    on_step=on_step,
                ),
            )

    def _inpaint(
        self,
        task: str,
        *,
        person: ImageInput,
        mask: ImageInput | None,
        garment: str = "upper",
        pose: str | os.PathLike | np.ndarray,
        pose_format: str,
        agnostic: ImageInput | None,
        cloth: ImageInput | None = None,
        text: str | None = None,
        sketch: ImageInput | None = None,
        paste: bool,
        sampler: str | None,
        steps: int | None,
        guidance: float | None,
        seed: int,
        n: int,
        bf16: bool,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Image.Image]:
        """The path of ``unifashion tryon`` / ``design``: person inputs, then the inpainting head."""
        head = self.image_head(task)
        pose = _pose_input(pose)
        if mask is None:
            mask = _automatic_mask(person, pose, pose_format, garment)
        names = ("person", "mask", "agnostic", "cloth", "sketch")
        with image_files([person, mask, agnostic, cloth, sketch], names) as refs:
            person_ref, mask_ref, agnostic_ref, cloth_ref, sketch_ref = refs
            for ref in (person_ref, mask_ref, cloth_ref, sketch_ref):
                if ref is not None:
                    ref.verify()
            inputs = inpaint_inputs(
                head,
                persons=[person_ref],
                masks=[mask_ref],
                poses=[pose],
                agnostics=[agnostic_ref],
                sketches=[sketch_ref] if sketch_ref else None,
                cloths=[cloth_ref] if cloth_ref else None,
                pose_format=pose_format,
            )
            return _repeat(
                n,
                seed,
                lambda s: inpaint_images(
                    self.retrieval,
                    head,
                    inputs,
                    cloths=[cloth_ref] if cloth_ref else None,
                    texts=[text] if text is not None else None,
                    paste=paste,
                    sampler=sampler,
                    steps=steps,
                    guidance_scale=guidance,
                    seed=s,
                    bf16=bf16,
                    on_step=on_step,
                ),
            )

    def try_on(
        self,
        person: ImageInput,
        cloth: ImageInput,
        *,
        mask: ImageInput | None = None,
        garment: str = "upper",
        pose: str | os.PathLike | np.ndarray,
        pose_format: str = "openpose",
        agnostic: ImageInput | None = None,
        paste: bool = True,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        n: int = 1,
        bf16: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Image.Image]:
        """Dress ``person`` in ``cloth`` (``unifashion tryon``). ``mask``: the region to paint (white), or
        None for one from the pose that makes room for a ``garment`` (upper, dress, lower);
        ``pose``: a keypoints JSON (OpenPose, or Dress Code with ``pose_format="dresscode"``) or an
        (18, 3) array; ``agnostic``: the person without the garment (default: greyed under the mask).
        With ``paste`` the person outside the mask is kept pixel for pixel."""
        return self._inpaint(
            "tryon",
            person=person,
            mask=mask,
            garment=garment,
            pose=pose,
            pose_format=pose_format,
            agnostic=agnostic,
            cloth=cloth,
            paste=paste,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            seed=seed,
            n=n,
            bf16=bf16,
            on_step=on_step,
        )

    def design(
        self,
        text: str,
        sketch: ImageInput,
        pose: str | os.PathLike | np.ndarray,
        *,
        person: ImageInput,
        mask: ImageInput | None = None,
        garment: str = "upper",
        pose_format: str = "openpose",
        agnostic: ImageInput | None = None,
        paste: bool = True,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        n: int = 1,
        bf16: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Image.Image]:
        """Draw ``person`` wearing the garment ``text`` describes, shaped by ``sketch`` (aligned with the
        person) (``unifashion design``); the other arguments are those of :meth:`try_on`."""
        if not isinstance(text, str):
            raise DataError(f"design: text must be a string, got {type(text).__name__}")
        return self._inpaint(
            "design",
            person=person,
            mask=mask,
            garment=garment,
            pose=pose,
            pose_format=pose_format,
            agnostic=agnostic,
            text=text,
            sketch=sketch,
            paste=paste,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            seed=seed,
            n=n,
            bf16=bf16,
            on_step=on_step,
        )

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source is not None else ""
        return f"UniFashion({', '.join(self.heads)}{where})"
