"""Textual-inversion embeddings: A1111 and diffusers files load (safely), their names in a prompt
become their vectors, the shared text encoder is left untouched, and the infotext names them."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.conditioning.clip import encode_weighted
from engine.conditioning.embeddings import EmbeddingDatabase, load_embedding
from engine.conditioning.tokens import tokenize_weighted
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams

CPU = torch.device("cpu")


def _a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem, "step": 0}, path
    )
    return path


def test_a1111_and_diffusers_files_load(tmp_path: Path) -> None:
    v = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    pt = load_embedding(_a1111_pt(tmp_path / "style-a.pt", v))
    save_file({"emb_params": v}, tmp_path / "style-b.safetensors")
    st = load_embedding(tmp_path / "style-b.safetensors")
    torch.save({"<style-c>": v[0]}, tmp_path / "style-c.bin")  # diffusers learned_embeds.bin
    bin_ = load_embedding(tmp_path / "style-c.bin")
    assert torch.equal(pt.vectors, v) and torch.equal(st.vectors, v) and torch.equal(bin_.vectors, v[:1])
    assert (pt.name, st.name, bin_.name) == ("style-a", "style-b", "style-c")
    assert len(pt.short_hash) == 12 and pt.short_hash != st.short_hash


class _Boom:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_bad_files_are_skipped_with_a_reason_and_never_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": _Boom()}}))
    save_file({"emb_params": torch.zeros(2, 768)}, tmp_path / "sd15-only.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    _a1111_pt(tmp_path / "good.pt", torch.ones(1, 64))
    db = EmbeddingDatabase.load(tmp_path, dim=64)
    assert list(db.embeddings) == ["good"]
    assert set(db.skipped) == {"evil", "sd15-only", "broken"}
    assert "width 768" in db.skipped["sd15-only"]
    assert "pickle code ran" not in capsys.readouterr().out
    assert EmbeddingDatabase.load(tmp_path / "missing", dim=64).embeddings == {}


def _db_with(tmp_path: Path, **vectors: torch.Tensor) -> EmbeddingDatabase:
    folder = tmp_path / "embeddings"
    folder.mkdir(exist_ok=True)
    for name, v in vectors.items():
        _a1111_pt(folder / f"{name}.pt", v)
    return EmbeddingDatabase.load(folder, dim=64)


def test_a_name_in_the_prompt_takes_one_slot_per_vector(builtin_model, tmp_path: Path) -> None:
    tok = builtin_model.tokenizer
    db = _db_with(tmp_path, **{"my-style": torch.zeros(3, 64)})
    table = db.token_table(tok)
    chunks, used = tokenize_weighted(tok, "a (my-style:1.2) circle", embeddings=table)
    (chunk,) = chunks
    assert used == 5  # a, 3 vectors, circle
    assert [(offset, emb.name) for offset, emb in chunk.fixes] == [(2, "my-style")]
    assert chunk.weights[2:5] == [1.2, 1.2, 1.2]
    # an embedding that does not fit in the chunk's last slots starts the next chunk
    filler = " ".join(["red"] * 74)
    chunks, _ = tokenize_weighted(tok, f"{filler} my-style", embeddings=table)
    assert len(chunks) == 2 and chunks[1].fixes[0][0] == 1 and not chunks[0].fixes


def test_vectors_replace_the_placeholders_and_the_encoder_is_left_alone(
    builtin_model, tmp_path: Path
) -> None:
    tok, te = builtin_model.tokenizer, builtin_model.text_encoder
    red_id = tok("red", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        red_vector = te.get_input_embeddings().weight[red_id].clone()
    db = _db_with(tmp_path, **{"fav-colour": red_vector[None]})
    before = {k: v.clone() for k, v in te.state_dict().items()}
    table = db.token_table(tok)
    via_embedding = encode_weighted(
        te, tokenize_weighted(tok, "a fav-colour circle", embeddings=table)[0], CPU
    )[0]
    plain = encode_weighted(te, tokenize_weighted(tok, "a red circle")[0], CPU)[0]
    assert torch.equal(via_embedding, plain)  # the same vector in the same slot: the same encoding
    assert not te.get_input_embeddings()._forward_hooks  # the hook is gone
    assert all(torch.equal(before[k], v) for k, v in te.state_dict().items())


def test_an_embedding_draws_what_its_vector_means(builtin_model, tmp_path: Path) -> None:
    tok, te = builtin_model.tokenizer, builtin_model.text_encoder
    blue_id = tok("blue", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        blue = te.get_input_embeddings().weight[blue_id].clone()
    db = _db_with(tmp_path, mystery=blue[None])
    prompt = "a large mystery circle in the center on a yellow background"
    params = GenerationParams(prompt=prompt, steps=12, seed=5, width=128, height=128)
    with_db = txt2img(builtin_model, params, embeddings=db)
    without = txt2img(builtin_model, params)
    image = np.asarray(with_db.images[0].convert("RGB"))
    # The embedding is the word "blue"'s own input vector, so the picture is the one the word draws
    # (whatever colour this model paints at 12 steps; asserting "blue" tied the test to one model).
    literal = GenerationParams(
        prompt=prompt.replace("mystery", "blue"), steps=12, seed=5, width=128, height=128
    )
    blue_word = np.asarray(txt2img(builtin_model, literal).images[0].convert("RGB"))
    assert np.abs(image.astype(int) - blue_word.astype(int)).max() <= 2
    assert not np.array_equal(image, np.asarray(without.images[0].convert("RGB")))
    short = db.embeddings["mystery"].short_hash
    assert f'TI hashes: "mystery: {short}"' in with_db.infotexts[0]
    assert "TI hashes" not in without.infotexts[0]


def test_the_engine_rereads_its_embeddings_folder(tmp_path: Path) -> None:
    from engine.service.facade import Engine

    engine = Engine(data_dir=tmp_path, device="cpu")
    encoder = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    model = SimpleNamespace(text_encoders=lambda: [(None, None, encoder)])
    assert engine.embeddings_for(model).embeddings == {}
    (tmp_path / "embeddings").mkdir()
    _a1111_pt(tmp_path / "embeddings" / "new.pt", torch.ones(2, 64))
    assert list(engine.embeddings_for(model).embeddings) == ["new"]


@pytest.mark.parametrize("shape", [(0, 64), (2, 3, 64)])
def test_malformed_tensors_are_rejected(tmp_path: Path, shape: tuple[int, ...]) -> None:
    save_file({"emb_params": torch.zeros(shape)}, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match="not a \\[vectors, width\\] tensor"):
        load_embedding(tmp_path / "odd.safetensors")
