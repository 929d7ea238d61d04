"""``unifashion train --config``: stages and their frozen parts, resume after SIGKILL, 2-process parity."""

import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unifashion import cli
from unifashion.backbones.cache import cache_home
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.pipeline import load_pipeline_config, train_pipeline
from unifashion.utils.errors import ConfigError

CONFIG = """
[run]
data = "{data}"
preset = "tiny"
checkpoint_every = {checkpoint_every}
progress = false

[model.qformer]
dropout = {dropout}

[model.llm]
lora_dropout = {dropout}

[retrieval]
phase1_epochs = 1
phase2_epochs = 1
batch_size = 16
bf16 = false
log_every = 1

[captioning]
epochs = 0.1
batch_size = 4
bf16 = false
log_every = 1

[generation]
tasks = {tasks}
vae_steps = 4
vae_batch_size = 8
steps = {steps}
tryon_steps = 3
design_steps = 3
batch_size = 8
bf16 = false
log_every = 1

[phase2]
itg_rows = 4
q2i_rows = 8
"""


def write_config(
    folder: Path,
    data: Path,
    *,
    tasks=("text2image", "tryon", "design"),
    steps=4,
    checkpoint_every=2,
    dropout=0.1,
    extra="",
) -> Path:
    path = folder / "run.toml"
    text = CONFIG.format(
        data=data, tasks=json.dumps(list(tasks)), steps=steps, checkpoint_every=checkpoint_every, dropout=dropout
    )
    path.write_text(text + extra, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "fs"
    code = cli.main(
        ["data", "synth", "--out", str(root), "--products", "200", "--size", "64", "--quiet", "--layouts", "fashioniq"]
    )
    assert code == 0
    return root


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


# ---------------------------------------------------------------------------
# config


def test_config_errors_name_the_file_and_field(tmp_path, data):
    good = write_config(tmp_path, data)
    assert load_pipeline_config(good).retrieval.batch_size == 16
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("batch_size = 16", "batch_sise = 16"))
    with pytest.raises(ConfigError, match=r"bad.toml.*retrieval.*batch_sise"):
        load_pipeline_config(bad)
    bad.write_text(good.read_text().replace("epochs = 0.1", 'epochs = "many"'))
    with pytest.raises(ConfigError, match=r"captioning\.epochs: expected a number"):
        load_pipeline_config(bad)
    bad.write_text(good.read_text().replace("dropout = 0.1", "drop = 0.1"))
    with pytest.raises(ConfigError, match=r"model\.qformer\.drop: unknown"):
        load_pipeline_config(bad)
    bad.write_text(good.read_text().replace('preset = "tiny"', 'preset = "huge"'))
    with pytest.raises(ConfigError, match="huge"):
        load_pipeline_config(bad)
    bad.write_text("[run]\npreset = 'tiny'\n")
    with pytest.raises(ConfigError, match=r"run\.data"):
        load_pipeline_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_pipeline_config(tmp_path / "absent.toml")


def test_yaml_and_overrides(tmp_path, data):
    import tomllib

    import yaml

    toml_path = write_config(tmp_path, data)
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(yaml.safe_dump(tomllib.loads(toml_path.read_text())))
    assert load_pipeline_config(yaml_path) == load_pipeline_config(toml_path)
    # ``1e-06`` (as JSON writes it; YAML 1.1 wants a dot) is a number, as YAML 1.2 reads it.
    raw = yaml.safe_load(yaml_path.read_text())
    raw["retrieval"]["adam_eps"] = "@EPS@"
    dumped = yaml.safe_dump(raw).replace("'@EPS@'", "1e-06")
    assert yaml.safe_load(dumped)["retrieval"]["adam_eps"] == "1e-06"  # PyYAML's own safe loader
    yaml_path.write_text(dumped)
    cfg = load_pipeline_config(yaml_path)  # integers stay integers (batch_size would be refused)
    assert cfg.retrieval.adam_eps == 1e-06 and cfg.retrieval.batch_size == 16
    yaml_path.write_text(dumped.replace("1e-06", "1e-0x"))
    with pytest.raises(ConfigError, match=r"retrieval\.adam_eps: expected a number, got '1e-0x'"):
        load_pipeline_config(yaml_path)
    cfg = load_pipeline_config(toml_path, ["retrieval.lr=0.001", "generation.tasks=['tryon']", "run.split=val"])
    assert cfg.retrieval.lr == 0.001 and cfg.generation.tasks == ("tryon",) and cfg.run.split == "val"
    with pytest.raises(ConfigError, match=r"SECTION\.KEY=VALUE"):
        load_pipeline_config(toml_path, ["retrieval.lr"])


# ---------------------------------------------------------------------------
# the stages and what each one trains


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("full")
    cfg = load_pipeline_config(write_config(root, data))
    seen: dict[str, dict[str, str]] = {}
    summary = train_pipeline(
        cfg, root / "model", on_stage_end=lambda stage, folder: seen.update({stage: digests(folder)})
    )
    return root / "model", seen, summary


def test_every_stage_runs_in_order_and_the_model_is_complete(full_run):
    model, seen, summary = full_run
    stages = [
        "phase1a",
        "phase1b_caption",
        "phase1b_vae",
        "phase1b_text2image",
        "phase1b_tryon",
        "phase1b_design",
        "phase2",
    ]
    assert list(seen) == stages
    meta = json.loads((model / "config.json").read_text())
    assert meta["training"]["pipeline"]["stages"] == stages
    assert {"captioning", "generation:text2image", "generation:tryon", "generation:design"} <= set(meta["heads"])
    for stage in stages:
        with open(model / "logs" / f"losses_{stage}.csv") as f:
            rows = list(csv.DictReader(f))
        assert rows and float(rows[-1]["loss"]) > 0, stage
    assert json.loads((model / "training_config.json").read_text())["run"]["preset"] == "tiny"
    assert not (model.parent / "model.work").exists()
    assert set(summary["phase2"]["terms"]) >= {"itc_target", "itc_caption", "itm", "itg", "q2i"}
    RetrievalModel.from_pretrained(model)  # loadable


def test_each_phase_trains_its_parts_and_leaves_the_rest(full_run):
    _, seen, _ = full_run

    def same(a: str, b: str, key: str) -> bool:
        return seen[a][key] == seen[b][key]

    q = "qformer.safetensors"
    # Phase 1b: the Q-Former is frozen while the heads train.
    for stage in ("phase1b_caption", "phase1b_vae", "phase1b_text2image", "phase1b_tryon", "phase1b_design"):
        assert same("phase1a", stage, q), stage
    assert same("phase1b_vae", "phase1b_design", "vae/diffusion_pytorch_model.safetensors")
    assert same("phase1b_caption", "phase1b_design", "captioner/lora.safetensors")
    # Phase 2: the Q-Former and both adapters move; LoRA, U-Net and VAE do not.
    assert not same("phase1b_design", "phase2", q)
    assert not same("phase1b_design", "phase2", "captioner/text_adapter.safetensors")
    assert not same("phase1b_design", "phase2", "generator/adapter.safetensors")
    for key in seen["phase1b_design"]:
        if "unet" in key or key.startswith(("vae/", "tryon/", "design/")) or key == "captioner/lora.safetensors":
            assert same("phase1b_design", "phase2", key), key


def test_continue_heads_fine_tunes_the_init_models_head(full_run, tmp_path, data):
    model, _, _ = full_run
    good = write_config(tmp_path, data)
    with pytest.raises(ConfigError, match=r"generation\.continue_heads needs run\.init_from"):
        load_pipeline_config(good, ["generation.continue_heads=true"])
    with pytest.raises(ConfigError, match="without phase1b_vae"):
        load_pipeline_config(good, ["generation.continue_heads=true", f"run.init_from='{model}'"])
    unet = "generator/unet/diffusion_pytorch_model.safetensors"
    for continued in (True, False):
        cfg = load_pipeline_config(
            good,
            [
                f"generation.continue_heads={str(continued).lower()}",
                "generation.lr=0",
                f"run.init_from='{model}'",
                "run.stages=['phase1b_text2image']",
            ],
        )
        out = tmp_path / f"continued-{continued}"
        train_pipeline(cfg, out)
        # Learning rate 0: a continued head is still the init model's; a fresh one is not.
        assert ((out / unet).read_bytes() == (model / unet).read_bytes()) is continued


def test_tryon_and_design_heads_can_start_from_the_text2image_head(full_run, tmp_path, data):
    """inpaint_init = "text2image": with learning rate 0 the try-on U-Net (reading the cloth latent
    too) is the text2image U-Net, its first convolution widened by zero weights; "fresh" is not."""
    model, _, _ = full_run
    source = load_file(model / "generator/unet/diffusion_pytorch_model.safetensors")
    for init in ("text2image", "fresh"):
        cfg = load_pipeline_config(
            write_config(tmp_path, data),
            [
                f"generation.inpaint_init='{init}'",
                "generation.tryon_cloth_latent=true",
                "generation.lr=0",
                f"run.init_from='{model}'",
                "run.stages=['phase1b_tryon']",
            ],
        )
        out = tmp_path / f"init-{init}"
        summary = train_pipeline(cfg, out)
        tryon = load_file(out / "tryon/unet/diffusion_pytorch_model.safetensors")
        conv = tryon["conv_in.weight"]
        assert conv.shape[1] == source["conv_in.weight"].shape[1] + 4 + 1 + 18 + 4  # + person, mask, pose, cloth
        same = all(torch.equal(tryon[k], v) for k, v in source.items() if k != "conv_in.weight")
        assert same is (init == "text2image")
        if init == "text2image":
            assert torch.equal(conv[:, :4], source["conv_in.weight"]) and not conv[:, 4:].any()
            assert summary["phase1b_tryon"]["started_from"] == "generator/"
        else:
            assert "started_from" not in summary["phase1b_tryon"]


def test_phase2_blend_keeps_that_share_of_phase_2s_change(full_run, tmp_path, data, load_benchmark):
    """phase2.blend = 0.25: every weight phase 2 trains (Q-Former, caption adapter, image adapter)
    ends a quarter of the way from where phase 2 started to where the same phase 2 (blend 1) ends;
    what phase 2 does not train is untouched. ``phase2_levers.py --blend``'s rows, blended after
    training, are the same model."""
    model, _, _ = full_run
    good = write_config(tmp_path, data)
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=rf"phase2\.blend: a share of phase 2's change in \(0, 1\], got {bad}"):
            load_pipeline_config(good, [f"phase2.blend={bad}"])
    outs = {}
    for blend in (1.0, 0.25):
        cfg = load_pipeline_config(good, [f"phase2.blend={blend}", f"run.init_from='{model}'", "run.stages=['phase2']"])
        outs[blend] = tmp_path / f"blend-{blend}"
        train_pipeline(cfg, outs[blend])
    trained = ("qformer.safetensors", "captioner/text_adapter.safetensors", "generator/adapter.safetensors")
    for name in trained:
        start, full, quarter = (load_file(folder / name) for folder in (model, outs[1.0], outs[0.25]))
        moved = [k for k, v in full.items() if v.is_floating_point() and not torch.equal(v, start[k])]
        assert moved, name  # phase 2 trained this part
        for k, v in quarter.items():
            torch.testing.assert_close(v, start[k] + 0.25 * (full[k] - start[k]), rtol=0, atol=1e-6, msg=k)
    for key, digest in digests(model).items():
        if key not in trained and key.endswith(".safetensors"):
            assert digests(outs[0.25])[key] == digest, key
    after = load_benchmark("phase2_levers").blended(model, outs[1.0], 0.25, tmp_path / "afterwards", image_head=True)
    for name in trained:
        for k, v in load_file(after / name).items():
            torch.testing.assert_close(v, load_file(outs[0.25] / name)[k], rtol=0, atol=1e-6, msg=k)


def test_phase2_levers_keeps_the_rows_an_interrupted_run_of_the_same_measurement_wrote(tmp_path, load_benchmark):
    """``phase2_levers.py --json``: written after every row; run again, rows of the same measurement
    are kept (not measured again), rows of another measurement or of other variant changes are not."""
    Rows = load_benchmark("phase2_levers").Rows
    path, calls = tmp_path / "table.json", []

    def measure(value):
        return lambda: calls.append(value) or {"r1_t2i": value}

    first = Rows(str(path), {"before": "m", "t2i": 150})
    first.add("before phase 2", measure(86.2))
    assert json.loads(path.read_text())["rows"] == [{"variant": "before phase 2", "r1_t2i": 86.2}]
    again = Rows(str(path), {"before": "m", "t2i": 150})
    assert again.add("before phase 2", measure(0.0)) == {"variant": "before phase 2", "r1_t2i": 86.2}
    again.add("blend 0.5", measure(87.0))
    assert calls == [86.2, 87.0] and [r["variant"] for r in json.loads(path.read_text())["rows"]] == [
        "before phase 2",
        "blend 0.5",
    ]
    changed = Rows(str(path), {"before": "m", "t2i": 150})
    changed.add("blend 0.5", measure(87.0), settings=["phase2.q2i_rows=4"])  # the same name, other changes
    assert calls[-1] == 87.0 and len(calls) == 3
    other = Rows(str(path), {"before": "m", "t2i": 50})
    assert other.add("before phase 2", measure(1.0))["r1_t2i"] == 1.0 and calls[-1] == 1.0


def test_phase2_itg_answers_each_text_in_its_own_style_and_can_keep_the_adapter(full_run, data):
    """Phase 2's ITG targets are the target's captions and its title: a title is answered to the
    title instruction (not the description one); itg_image_rows adds ITG from the target image
    alone; itg_adapter = false keeps the caption adapter as it was while the Q-Former still learns."""
    from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
    from unifashion.config import RetrievalTrainingConfig
    from unifashion.data.formats import read_split
    from unifashion.models.captioner import Captioner
    from unifashion.training.data import triplet_items
    from unifashion.training.phase2 import Phase2Stage
    from unifashion.utils.distributed import Shard

    model_dir, _, _ = full_run
    split = read_split(data, "train")
    model = RetrievalModel.from_pretrained(model_dir)
    table = FeatureTable.build(
        [r for q in split.products for r in q.images], FeatureCache(model.vision), progress=False
    )
    items = triplet_items(split, table)
    titles = {q.title for q in split.products}
    assert all(t in titles for t in items.target_titles)
    row = next(i for i, texts in enumerate(items.target_texts) if items.target_titles[i] in texts)
    assert items.caption_style(row, items.target_titles[row]) == "title"
    assert {items.caption_style(row, t) for t in items.target_texts[row] if t != items.target_titles[row]} == {
        "description"
    }
    assert not any(triplet_items(split, table, {t.target: ["a text"] for t in split.triplets}).target_titles)

    cfg = RetrievalTrainingConfig(bf16=False)
    for adapter, image_rows in ((True, 0), (False, 4)):
        captioner = Captioner.from_pretrained(model_dir / "captioner")
        calls: list[tuple[list[str], list[str]]] = []
        real = captioner.itg_token_loss

        def recording(z, styles, answers, real=real, calls=calls):
            calls.append((list(styles), list(answers)))
            return real(z, styles, answers)

        captioner.itg_token_loss = recording
        stage = Phase2Stage(
            model,
            items,
            table,
            cfg,
            8,
            10,
            captioner=captioner,
            itg_rows=8,
            itg_adapter=adapter,
            itg_image_rows=image_rows,
        )
        assert all(p.requires_grad is adapter for p in captioner.text_adapter.parameters())
        rows = list(range(len(items)))[:8]
        generator = torch.Generator().manual_seed(0)
        out = stage(rows, generator, Shard())
        assert [len(a) for _, a in calls] == [8, 4][: 1 + bool(image_rows)] and ("itg_image" in out) is bool(image_rows)
        for styles, answers in calls:
            assert styles == [items.caption_style(i, a) for i, a in zip(rows[: len(answers)], answers, strict=True)]
        asked = [(s, a) for styles, answers in calls for s, a in zip(styles, answers, strict=True)]
        assert all((s == "title") is (a in titles) for s, a in asked)
        assert {s for s, _ in asked} == {"title", "description"}  # both kinds drawn (seeded)
        model.qformer.zero_grad()
        out["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.qformer.parameters())
        assert all(p.grad is None for p in captioner.text_adapter.parameters()) is not adapter


# ---------------------------------------------------------------------------
# resume


def _unifashion(*args: str) -> list[str]:
    return [sys.executable, "-m", "unifashion", *args]


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        for k, v in load_file(path).items():
            out[f"{path.relative_to(folder)}:{k}"] = v
    return out


def _losses(folder: Path, stage: str) -> list[float]:
    with open(folder / "logs" / f"losses_{stage}.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


# Runs ``unifashion train`` with one point patched to stall (printing "@@stalled@@") so the test can
# SIGKILL it exactly there.
_STALLING_TRAIN = textwrap.dedent(
    """
    import sys, time
    from unifashion import cli
    from unifashion.training import pipeline, runner

    point = sys.argv[1]

    def stall():
        # One write: under torch.distributed.run (python -u) print() writes the text and the
        # newline separately, and two ranks stalling at once would interleave them.
        sys.stdout.write("@@stalled@@\\n")
        sys.stdout.flush()
        time.sleep(600)

    real_load = runner.StageRunner._load
    def _load(self, stage, *args, **kwargs):  # says on stderr where a resumed stage continues
        step = real_load(self, stage, *args, **kwargs)
        sys.stderr.write(f"@@resumed {stage.name} at step {step}@@\\n")
        return step
    runner.StageRunner._load = _load

    if point.startswith("checkpoint of "):  # a checkpoint of this stage complete on disk, mid-stage
        real_save = runner.StageRunner._save
        def _save(self, stage, *args, **kwargs):
            real_save(self, stage, *args, **kwargs)
            if stage.name == point.removeprefix("checkpoint of "):
                stall()
        runner.StageRunner._save = _save
    elif point.startswith("after "):  # a stage recorded as done, the next one not started
        real_finished = pipeline.Pipeline.finished
        def finished(self, stage, summary):
            real_finished(self, stage, summary)
            if stage == point.removeprefix("after "):
                stall()
        pipeline.Pipeline.finished = finished
    elif point.startswith("writing checkpoint "):  # the n-th checkpoint of this process half written
        n = int(point.removeprefix("writing checkpoint "))
        real_file = runner.save_file
        written = []
        def save_file(tensors, path, *args, **kwargs):
            real_file(tensors, path, *args, **kwargs)
            if str(path).endswith("optimizer.safetensors"):
                written.append(path)
                if len(written) == n:
                    stall()
        runner.save_file = save_file
    sys.exit(cli.main(sys.argv[2:]))
    """
)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torch.distributed.run starts its workers in
    sessions of their own, out of reach of a process-group kill)."""
    import psutil

    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _train_until(point: str, config: Path, out: Path, resume: bool, processes: int = 1) -> None:
    """Run ``unifashion train`` (under ``torch.distributed.run`` when ``processes`` > 1) until
    ``point`` is reached, then SIGKILL every process of the run at once."""
    args = ["train", "--config", str(config), "--out", str(out), *(["--resume"] if resume else [])]
    script = out.parent / "stalling_train.py"
    script.write_text(_STALLING_TRAIN)
    if processes == 1:
        command = [sys.executable, str(script), point, *args]
        env = None
    else:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        command = [sys.executable, *launcher, "--master_port", str(_free_port()), str(script), point, *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
    errors = out.parent / "stderr.txt"
    with open(errors, "w") as err:  # a file, not a pipe: progress bars would fill a pipe and block
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        # A run that hangs instead of reaching the point is killed, so the test fails instead of waiting.
        watchdog = threading.Timer(900, _kill_tree, [proc.pid])
        watchdog.start()
        try:
            lines = iter(proc.stdout.readline, "")
            reached = any("@@stalled@@" in line for line in lines)
            assert reached, f"never reached {point!r}: {errors.read_text()[-2000:]}"
            _kill_tree(proc.pid)  # the launcher and every worker it started, at once
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                _kill_tree(proc.pid)
                proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists()


def test_resume_after_sigkill_at_every_kind_of_point_continues_exactly(tmp_path, data):
    """One run killed five times: in phase 1a, between two stages, while a checkpoint is half
    written (the previous checkpoint must survive), in the U-Net stage and in phase 2; each time
    resumed. The model equals an uninterrupted run's, weight for weight, loss for loss."""
    config = write_config(tmp_path, data, tasks=("text2image",), steps=12, checkpoint_every=3)
    straight = tmp_path / "straight"
    train_pipeline(load_pipeline_config(config), straight)

    killed = tmp_path / "killed"
    work = tmp_path / "killed.work"
    resumed = tmp_path / "stderr.txt"  # each run's stderr: where a resumed stage continued
    _train_until("checkpoint of phase1a", config, killed, resume=False)
    assert json.loads((work / "checkpoint" / "state.json").read_text())["stage"] == "phase1a"
    # Killed inside the first stage, before any stage was done: the run still resumes from its checkpoint.
    assert json.loads((work / "progress.json").read_text())["done"] == []
    _train_until("after phase1b_caption", config, killed, resume=True)
    assert "@@resumed phase1a at step 3@@" in resumed.read_text()
    assert json.loads((work / "progress.json").read_text())["done"] == ["phase1a", "phase1b_caption"]
    assert not (work / "checkpoint").exists()
    # This process writes the VAE's checkpoint (1st), then the U-Net's at steps 3 (2nd) and 6 (3rd):
    # killed inside the 3rd, the U-Net's step-3 checkpoint is what resume finds.
    _train_until("writing checkpoint 3", config, killed, resume=True)
    assert "@@resumed" not in resumed.read_text()  # it started the VAE stage afresh
    state = json.loads((work / "checkpoint" / "state.json").read_text())
    assert (state["stage"], state["step"]) == ("phase1b_text2image", 3)
    _train_until("checkpoint of phase2", config, killed, resume=True)
    assert "@@resumed phase1b_text2image at step 3@@" in resumed.read_text()
    assert json.loads((work / "checkpoint" / "state.json").read_text())["stage"] == "phase2"
    done = subprocess.run(
        _unifashion("train", "--config", str(config), "--out", str(killed), "--resume"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _tensors(straight), _tensors(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    for stage in ("phase1a", "phase1b_caption", "phase1b_vae", "phase1b_text2image", "phase2"):
        assert _losses(killed, stage) == pytest.approx(_losses(straight, stage), abs=1e-5), stage


def test_optimiser_betas_eps_and_schedule_come_from_the_config(tmp_path, data, monkeypatch):
    """Each section's adam_betas, adam_eps and lr_schedule reach the optimiser of its stages (the
    paper's recipe: 0.9/0.99, cosine for the Q-Former and LLM, constant for the U-Nets); the
    logged rate of a constant stage stays at its peak; phase 2 peaks at ``phase2_lr`` where it is
    set; bad betas are named."""
    from unifashion.training import runner

    seen = {}
    real_adamw, real_schedule = runner.adamw, runner.cosine_with_warmup

    def adamw(named, lr, weight_decay, betas, eps):
        seen.setdefault("opt", []).append((tuple(betas), eps))
        seen.setdefault("lr", []).append(lr)
        return real_adamw(named, lr, weight_decay, betas, eps)

    def schedule(optimizer, total, warmup, kind):
        seen.setdefault("kind", []).append(kind)
        return real_schedule(optimizer, total, warmup, kind)

    monkeypatch.setattr(runner, "adamw", adamw)
    monkeypatch.setattr(runner, "cosine_with_warmup", schedule)
    config = write_config(tmp_path, data, tasks=("text2image",), steps=6, checkpoint_every=0)
    text = config.read_text()
    text = text.replace(
        "[retrieval]\n", "[retrieval]\nadam_betas = [0.9, 0.99]\nadam_eps = 1e-8\nlr = 3e-4\nphase2_lr = 5e-5\n"
    )
    text = text.replace("[captioning]\n", "[captioning]\nadam_betas = [0.9, 0.99]\n")
    text = text.replace(
        "[generation]\n", '[generation]\nadam_betas = [0.9, 0.99]\nlr_schedule = "constant"\nwarmup_ratio = 0.0\n'
    )
    config.write_text(text)
    train_pipeline(load_pipeline_config(config), tmp_path / "m")
    # phase 1a, caption, VAE, text2image, phase 2
    assert seen["opt"] == [((0.9, 0.99), 1e-8), ((0.9, 0.99), 1e-6), ((0.9, 0.99), 1e-6), ((0.9, 0.99), 1e-6)] + [
        ((0.9, 0.99), 1e-8)
    ]
    # The VAE (trained here only for tiny/mini; the paper loads Stable Diffusion's) keeps its cosine.
    assert seen["kind"] == ["cosine", "cosine", "cosine", "constant", "cosine"]
    assert (seen["lr"][0], seen["lr"][-1]) == (3e-4, 5e-5)
    with open(tmp_path / "m" / "logs" / "losses_phase1b_text2image.csv") as f:
        assert {float(r["lr"]) for r in csv.DictReader(f)} == {4e-4}
    config.write_text(text.replace("adam_betas = [0.9, 0.99]\nadam_eps", "adam_betas = [0.9, 1.5]\nadam_eps"))
    with pytest.raises(ConfigError, match=r"retrieval\.adam_betas: two numbers in \[0, 1\), got \[0.9, 1.5\]"):
        load_pipeline_config(config).check("config")


def test_resume_refuses_another_config(tmp_path, data):
    config = write_config(tmp_path, data, tasks=(), checkpoint_every=2)
    work = tmp_path / "m.work"
    work.mkdir()
    (work / "progress.json").write_text(json.dumps({"digest": "0" * 16, "done": ["phase1a"], "summary": {}}))
    with pytest.raises(ConfigError, match="another config"):
        train_pipeline(load_pipeline_config(config), tmp_path / "m", resume=True)


# ---------------------------------------------------------------------------
# data parallel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grad_norms(folder: Path, stage: str) -> list[float]:
    with open(folder / "logs" / f"losses_{stage}.csv") as f:
        return [float(r["grad_norm"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "heads",
    [
        pytest.param((), id="retrieval"),
        pytest.param(("caption",), id="caption"),
        pytest.param(("caption", "fsdp"), id="caption-fsdp"),
        pytest.param(("text2image",), id="vae-and-text2image", marks=pytest.mark.slow),
    ],
)
def test_two_processes_follow_the_trajectory_of_one(tmp_path, data, heads):
    """Same global batch (16), dropout off: every stage under 2 processes gives the same losses,
    the same gradient norms and the same weights as one process. The gradient norm is what tells
    an averaged all-reduce from a summed one (AdamW's update, hence losses and weights, hardly
    notices a gradient twice as large). Losses measured within 2e-6 (the CSV keeps 6 decimals)."""
    tasks = tuple(h for h in heads if h not in ("caption", "fsdp"))
    config = write_config(tmp_path, data, tasks=tasks, checkpoint_every=0, dropout=0.0)
    if "fsdp" in heads:  # the LLM's layers, LoRA and moments sharded over the 2 processes
        config.write_text(config.read_text().replace("[captioning]\n", "[captioning]\nfsdp = true\n"))
    if "caption" not in heads:
        config.write_text("with_captioning = false\n" + config.read_text())
    # Feature tables memory-mapped: written once by rank 0 of the 2-process run (which goes first,
    # with no table on disk), mapped by both ranks, then read by the 1-process run.
    config.write_text(config.read_text().replace("progress = false", "progress = false\nfeature_memmap = true", 1))
    for tables in (cache_home() / "features").glob("*/tables"):
        shutil.rmtree(tables)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "unifashion",
            "train",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert list((cache_home() / "features").glob("*/tables/*.npy"))
    one = subprocess.run(
        _unifashion("train", "--config", str(config), "--out", str(tmp_path / "one")), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-2000:]
    stages = sorted(p.stem.removeprefix("losses_") for p in (tmp_path / "one" / "logs").glob("losses_*.csv"))
    want = {"phase1a", "phase2"} | ({"phase1b_caption"} if "caption" in heads else set())
    want |= {"phase1b_vae", *(f"phase1b_{t}" for t in tasks)} if tasks else set()
    assert set(stages) == want
    for stage in stages:
        a, b = _losses(tmp_path / "one", stage), _losses(tmp_path / "two", stage)
        assert len(a) == len(b) >= 3, stage
        assert b == pytest.approx(a, abs=1e-4), stage
        ga, gb = _grad_norms(tmp_path / "one", stage), _grad_norms(tmp_path / "two", stage)
        assert gb == pytest.approx(ga, rel=1e-3, abs=1e-5), stage
    a, b = _tensors(tmp_path / "one"), _tensors(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
    caption = _summary(tmp_path / "two").get("phase1b_caption", {})
    if "fsdp" in heads:  # each process held about half of the caption stage's weights
        spread = caption["fsdp"]
        assert spread["processes"] == 2 and 0.45 < spread["weights_here"] / spread["weights"] < 0.55, spread
    else:
        assert "fsdp" not in caption


def test_a_sharded_caption_stage_killed_after_a_checkpoint_resumes_exactly(tmp_path, data):
    """The caption stage sharded over 2 processes (FSDP), every process SIGKILLed right after its
    step-2 checkpoint, resumed under 2 processes: the checkpoint holds whole tensors (gathered
    from the shards) and each process takes its slice back, weights and AdamW's moments, so the
    run ends where one uninterrupted process ends."""
    config = write_config(tmp_path, data, tasks=(), checkpoint_every=2, dropout=0.0)
    config.write_text(config.read_text().replace("[captioning]\n", "[captioning]\nfsdp = true\n"))
    straight = tmp_path / "straight"
    train_pipeline(load_pipeline_config(config), straight)
    killed = tmp_path / "killed"
    work = tmp_path / "killed.work"
    _train_until("checkpoint of phase1b_caption", config, killed, resume=False, processes=2)
    state = json.loads((work / "checkpoint" / "state.json").read_text())
    assert (state["stage"], state["step"]) == ("phase1b_caption", 2)
    moments = load_file(work / "checkpoint" / "optimizer.safetensors")
    weights = load_file(work / "checkpoint" / "trainable.safetensors")
    # whole tensors: as many moments as weights, each of its weight's full shape
    assert sorted(t.shape for k, t in moments.items() if k.endswith("exp_avg")) == sorted(
        t.shape for t in weights.values()
    )
    _resume_under_two_processes(config, killed)
    assert _summary(killed)["phase1b_caption"]["fsdp"]["processes"] == 2
    assert _losses(killed, "phase1b_caption") == pytest.approx(_losses(straight, "phase1b_caption"), abs=1e-4)
    a, b = _tensors(straight), _tensors(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)


def _resume_under_two_processes(config: Path, out: Path) -> None:
    """``unifashion train --resume`` to the end under ``torch.distributed.run`` with 2 processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    done = subprocess.run(
        [*launcher, str(_free_port()), "-m", "unifashion", "train", "--config", str(config), "--out", str(out)]
        + ["--resume"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _summary(model: Path) -> dict:
    return json.loads((model / "config.json").read_text())["training"]["pipeline"]["summary"]


def test_a_two_process_run_killed_in_phase_1a_and_in_phase_2_resumes_under_two_processes(tmp_path, data):
    """Every process of a 2-process run SIGKILLed at once, twice (a phase-1a checkpoint on disk,
    then a phase-2 one), each time resumed under 2 processes: the model ends where one
    uninterrupted process ends (the parity tolerances of the test above), and the loss logs
    hold each step once."""
    config = write_config(tmp_path, data, tasks=(), checkpoint_every=2, dropout=0.0)
    config.write_text("with_captioning = false\n" + config.read_text())
    straight = tmp_path / "straight"
    train_pipeline(load_pipeline_config(config), straight)
    killed = tmp_path / "killed"
    work = tmp_path / "killed.work"
    _train_until("checkpoint of phase1a", config, killed, resume=False, processes=2)
    assert json.loads((work / "checkpoint" / "state.json").read_text())["stage"] == "phase1a"
    _train_until("checkpoint of phase2", config, killed, resume=True, processes=2)
    state = json.loads((work / "checkpoint" / "state.json").read_text())
    assert state["stage"] == "phase2" and json.loads((work / "progress.json").read_text())["done"] == ["phase1a"]
    _resume_under_two_processes(config, killed)
    for stage in ("phase1a", "phase2"):
        with open(killed / "logs" / f"losses_{stage}.csv") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f)]
        assert steps == list(range(1, len(steps) + 1)), stage
        assert _losses(killed, stage) == pytest.approx(_losses(straight, stage), abs=1e-4), stage
    a, b = _tensors(straight), _tensors(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)


def _shop_catalog(root: Path) -> Path:
    """A shop's own catalog in the folder format, not drawn by FashionSynth: 60 noisy photo-like
    pictures of six colours and five kinds of goods, one caption each, no triplets, no persons."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 40), "blue": (30, 60, 190), "green": (40, 150, 60), "black": (20, 20, 20)}
    colours |= {"white": (235, 235, 235), "yellow": (230, 200, 40)}
    kinds = ("mug", "sneaker", "handbag", "scarf", "hat")
    (root / "photos").mkdir(parents=True)
    rows = []
    for i in range(60):
        colour, kind = list(colours)[i % 6], kinds[i % 5]
        background = np.linspace(120, 220, 96)[:, None, None] + rng.normal(0, 12, (96, 80, 3))
        picture = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        x, y = (int(v) for v in rng.integers(5, 25, 2))
        ImageDraw.Draw(picture).ellipse([x, y, x + 45, y + 60], fill=colours[colour])
        picture.save(root / "photos" / f"{i:03d}.jpg", quality=90)
        split = "val" if i % 6 == 5 else "train"
        row = {"id": f"p{i:03d}", "image": f"photos/{i:03d}.jpg", "caption": f"{colour} {kind}", "category": kind}
        rows.append(row | {"split": split})
    (root / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_shop_catalog_without_triplets_or_persons_trains_what_it_can(tmp_path, capsys):
    """The README's command on a user's own folder (captioned products only): retrieval, the caption
    head, the VAE and the text-to-image head train; try-on, design and phase 2 are skipped, each
    saying what data it lacks (terminal and summary); the model loads and searches its catalog."""
    from unifashion.pipelines.unifashion import UniFashion

    shop = _shop_catalog(tmp_path / "shop")
    tiny = Path(__file__).parents[3] / "configs" / "tiny.toml"
    args = ["train", "--config", str(tiny), "--out", str(tmp_path / "model"), "--set", f'run.data="{shop}"']
    assert cli.main([*args, "--set", "run.progress=false"]) == 0
    said = capsys.readouterr().out
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert set(meta["heads"]) == {"retrieval", "captioning", "generation", "generation:text2image"}
    summary = meta["training"]["pipeline"]["summary"]
    for stage in ("phase1a", "phase1b_caption", "phase1b_vae", "phase1b_text2image"):
        assert "skipped" not in summary[stage] and summary[stage]["last"], stage
    for stage, lacking in (
        ("phase1b_tryon", "no paired try-on samples (tryon.jsonl)"),
        ("phase1b_design", "no paired try-on samples (tryon.jsonl), with a sketch and a text"),
        ("phase2", "no triplets with a target (triplets.jsonl)"),
    ):
        assert lacking in summary[stage]["skipped"] and f"{stage}: skipped, the data has {lacking}" in said
    model = UniFashion.from_pretrained(tmp_path / "model")
    photos = sorted((shop / "photos").glob("*.jpg"))[:8]
    scores = model.similarity(model.encode_texts(["red mug"], bf16=False), model.encode_images(photos, bf16=False))
    assert scores.shape == (1, 8) and scores.isfinite().all()
    assert len(model.caption(photos[:2], "description", max_new_tokens=4, bf16=False)) == 2


@pytest.mark.parametrize("name", ["full.toml", "quickstart-full.toml", "tiny.toml"])
def test_shipped_configs_load(name):
    cfg = load_pipeline_config(Path(__file__).parents[3] / "configs" / name)
    assert cfg.run.data and cfg.generation.tasks == ("text2image", "tryon", "design")


def test_the_papers_recipe_loads_and_says_what_the_paper_says():
    cfg = load_pipeline_config(Path(__file__).parents[3] / "configs" / "paper.toml", ['run.data="data/fashiongen"'])
    cfg.check("configs/paper.toml")
    assert cfg.model_config().preset == "paper" and cfg.model_config().diffusion.sampler == "plms"
    for section in (cfg.retrieval, cfg.captioning):
        assert (section.lr, section.adam_betas, section.lr_schedule) == (2e-5, (0.9, 0.99), "cosine")
        assert (section.batch_size, section.warmup_ratio, section.weight_decay) == (32, 0.03, 0.0)
    assert (cfg.captioning.lora_rank, cfg.captioning.lora_alpha) == (128, 256)
    assert len(cfg.model_config().llm.lora_targets) == 7  # every linear layer, as LLaVA's LoRA
    assert cfg.phase2.itg_adapter and cfg.phase2.itg_image_rows == 0  # Eq. 13 as written
    g = cfg.generation
    assert (g.lr, g.lr_schedule, g.batch_size, g.steps, g.adam_betas) == (1e-4, "constant", 32, 360000, (0.9, 0.99))
    assert g.ema_decay == g.noise_offset == g.noisy_share == g.min_snr_gamma == 0.0
