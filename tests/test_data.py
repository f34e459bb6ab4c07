"""The torch Dataset / DataLoader over clip datasets: determinism, sharding, resume, bad clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lavid.data.clips import ClipDataset, ClipSampler, DatasetFormatError, make_loader
from lavid.data.video_index import VideoIndexConfig, build_video_dataset


@pytest.fixture(scope="module")
def index_dir(video_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "index"
    build_video_dataset(video_dir, out, VideoIndexConfig(clip_len=4, size=32), progress=False)
    return out


def _order(loader):
    return [batch["index"].tolist() for batch in loader]


def test_loader_is_deterministic_for_a_seed_with_workers(index_dir):
    dataset = ClipDataset(index_dir)
    first = _order(make_loader(dataset, 4, seed=3, num_workers=2))
    again = _order(make_loader(dataset, 4, seed=3, num_workers=0))
    other = _order(make_loader(dataset, 4, seed=4, num_workers=0))
    assert first == again and first != other
    batch = next(iter(make_loader(dataset, 4, seed=3)))
    assert batch["frames"].shape == (4, 4, 3, 32, 32) and batch["frames"].dtype == torch.uint8


def test_sampler_splits_across_processes_and_epochs_differ():
    shards = [list(ClipSampler(10, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set().union(*shards) == set(range(10))  # every item seen; 2 repeated to even out
    sampler = ClipSampler(10, seed=1)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0 and sorted(sampler) == list(range(10))


def test_sampler_resumes_mid_epoch():
    sampler = ClipSampler(20, seed=5, num_replicas=2, rank=1)
    full = list(sampler)
    sampler.set_epoch(0, start=7)
    assert list(sampler) == full[7:] and len(sampler) == 3


def test_undecodable_clip_is_reported_and_replaced(index_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    dataset = ClipDataset(copy)
    first_source = str(dataset.clips[0]["source"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    dataset.clips = dataset.clips.map(
        lambda row: {"source": str(broken) if row["source"] == first_source else row["source"]}
    )
    with pytest.warns(UserWarning, match="skipping clip 0"):
        item = dataset[0]
    assert item["index"] != 0 and item["frames"].shape == (4, 3, 32, 32)


def test_not_a_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="not a lavid dataset"):
        ClipDataset(tmp_path)


def test_split_is_stratified_and_names_each_episode_by_itself_not_its_folder():
    from lavid.data.clips import episode_identities, split_by_episode

    tasks = {"reacher-easy": 40, "walker-walk": 16, "jaco-reach": 12, "cartpole-swingup": 2}
    sources = [f"sim:{task}/camera=0/policy=random/episode={k}" for task, n in tasks.items() for k in range(n)
               for _clip in range(3)]  # three clips an episode
    train, heldout = split_by_episode(sources, 0.1)
    assert sorted(train + heldout) == list(range(len(sources)))
    held_episodes = {sources[i] for i in heldout}
    assert not held_episodes & {sources[i] for i in train}  # no episode on both sides
    per_task = {task: sum(s.startswith(f"sim:{task}/") for s in held_episodes) for task in tasks}
    assert per_task == {"reacher-easy": 4, "walker-walk": 2, "jaco-reach": 1, "cartpole-swingup": 1}
    # the same episodes are held out whatever else the dataset holds
    only_reacher = [s for s in sources if "reacher" in s]
    _, held_alone = split_by_episode(only_reacher, 0.1)
    assert {only_reacher[i] for i in held_alone} == {s for s in held_episodes if "reacher" in s}
    # video files: named relative to the folder they share, so moving the folder keeps the split
    here = [f"/data/videos/{c}/clip{k}.mp4" for c in ("cooking", "sports") for k in range(10)]
    moved = [s.replace("/data/videos", "/mnt/elsewhere/v") for s in here]
    assert episode_identities(here) == episode_identities(moved) == [s[len("/data/videos/"):] for s in here]
    assert split_by_episode(here, 0.2) == split_by_episode(moved, 0.2)
    assert {here[i].split("/")[3] for i in split_by_episode(here, 0.2)[1]} == {"cooking", "sports"}
    assert split_by_episode(sources, 0.0) == (list(range(len(sources))), [])
    assert split_by_episode(["/one/video.mp4"] * 4, 0.5) == ([0, 1, 2, 3], [])  # one episode stays in training


def test_a_moved_dataset_keeps_its_split(sim_data, tmp_path):
    import shutil

    from lavid.data.data_config import DataConfig
    from lavid.data.eval_data import load_split

    moved = tmp_path / "moved"
    shutil.copytree(sim_data, moved)
    config = DataConfig(data=str(sim_data), frames=4, holdout_fraction=0.34)
    here = load_split(config, "heldout", max_clips=100)
    there = load_split(DataConfig(data=str(moved), frames=4, holdout_fraction=0.34), "heldout", max_clips=100)
    assert torch.equal(here.episodes, there.episodes) and torch.equal(here.frames, there.frames)
    assert 0 < len(set(here.episodes.tolist())) < 6
