"""``overwrite`` replaces Zarr stores only: never a directory of a user's other files.

Before, ``save(url, overwrite=True)`` and ``fit(checkpoint=url, overwrite_checkpoint=True)``
deleted whatever directory was at ``url``.
"""

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from diaggmm_dist import DiagGMM
from diaggmm_dist.stores.zarr_groups import NotAGroupError


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).normal(size=(400, 3))


@pytest.fixture
def folder_of_other_files(tmp_path):
    folder = tmp_path / "documents"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (folder / "sub" / "zarr.json").write_text(
        "{}"
    )  # a Zarr node inside does not make the folder one
    return folder


def files_under(folder):
    return sorted(
        (p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    )


def test_save_with_overwrite_refuses_a_folder_of_other_files(rows, folder_of_other_files):
    before = files_under(folder_of_other_files)
    with pytest.raises(
        NotAGroupError, match="not a Zarr store: refusing to replace it, even with overwrite"
    ):
        DiagGMM(2, random_state=0).fit(rows).save(folder_of_other_files, overwrite=True)
    assert files_under(folder_of_other_files) == before


def test_fit_with_overwrite_checkpoint_refuses_a_folder_of_other_files(rows, folder_of_other_files):
    before = files_under(folder_of_other_files)
    with pytest.raises(NotAGroupError, match="refusing to replace it, even with overwrite"):
        DiagGMM(2, random_state=0).fit(
            rows, checkpoint=folder_of_other_files, overwrite_checkpoint=True
        )
    assert files_under(folder_of_other_files) == before
    assert not folder_of_other_files.with_name("documents.lease").exists()


def test_overwrite_still_replaces_zarr_stores(rows, tmp_path):
    gmm = DiagGMM(2, random_state=0).fit(rows)
    model = tmp_path / "model.zarr"
    gmm.save(model)
    DiagGMM(3, random_state=0).fit(rows).save(model, overwrite=True)
    assert DiagGMM.load(model).n_components == 3
    # a model store is not a checkpoint of this run: replaced with overwrite_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DiagGMM(2, random_state=0).fit(rows, checkpoint=model, overwrite_checkpoint=True)
    # a checkpoint that lost its root metadata (only its steps are left) is still a Zarr store
    checkpoint = tmp_path / "ckpt.zarr"
    DiagGMM(2, random_state=0, max_iter=3).fit(rows, checkpoint=checkpoint)
    (checkpoint / "zarr.json").unlink()
    refit = DiagGMM(2, random_state=0).fit(rows, checkpoint=checkpoint, overwrite_checkpoint=True)
    np.testing.assert_array_equal(refit.means_, DiagGMM(2, random_state=0).fit(rows).means_)


def test_cli_fit_overwrite_refuses_a_folder_of_other_files(rows, folder_of_other_files, tmp_path):
    import zarr

    data = tmp_path / "data.zarr"
    zarr.create_array(str(data), data=rows)
    before = files_under(folder_of_other_files)
    diaggmm = shutil.which("diaggmm") or str(
        __import__("pathlib").Path(sys.executable).with_name("diaggmm")
    )
    for option in ("--out", "--checkpoint"):
        out = ["--out", str(tmp_path / "m.zarr")] if option == "--checkpoint" else []
        result = subprocess.run(
            [
                diaggmm,
                "fit",
                str(data),
                "--k",
                "2",
                *out,
                option,
                str(folder_of_other_files),
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 2, result.stderr
        assert "refusing to replace it" in result.stderr
        assert "Traceback" not in result.stderr
        assert files_under(folder_of_other_files) == before
