"""data.py's token space: layout, note and time tokens, canonical note lists."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import data
from data import (
    AUDIO,
    BOS,
    DIFFICULTY_TOKENS,
    NOTE,
    PAD,
    TIME,
    VOCAB_SIZE,
    ChunkNote,
    audio_tokens,
    decode_notes,
    encode_notes,
    note_fields,
    note_token,
    note_tokens_error,
    object_token,
    time_token,
    token_tick,
)


def test_layout_matches_the_design_table():
    starts = {name: r.start for name, r in data.TOKEN_RANGES.items()}
    # version 5's rows keep their ids; version 6 appends the other kinds and the lengths after them
    assert starts == {"time": 0, "note": 12_288, "audio": 12_528, "special": 14_576, "difficulty": 14_582} | {
        "bomb": 14_587,
        "wall": 14_599,
        "arc": 14_839,
        "chain": 14_841,
        "length": 15_009,
    }
    assert (data.EOS, data.AUDIO_START, data.NOTES_START) == (14_577, 14_579, 14_581)
    assert list(DIFFICULTY_TOKENS.items()) == [
        ("Easy", 14_582),
        ("Normal", 14_583),
        ("Hard", 14_584),
        ("Expert", 14_585),
        ("ExpertPlus", 14_586),
    ]
    assert data.NOTES_ONLY_VOCAB == 14_587 and VOCAB_SIZE == 15_009 + 64 * 48 < 151_936  # fits Qwen3's vocabulary


def test_every_cell_colour_direction_has_its_own_token():
    tokens = {note_token(x, y, c, d) for x in range(4) for y in range(3) for c in range(2) for d in range(9)}
    assert len(tokens) == 4 * 3 * 2 * 9 and all(t in NOTE for t in tokens)
    assert note_token(3, 0, 0, 0) != note_token(0, 1, 0, 0)  # the source spec's y*3+x collided here
    assert note_token(1, 2, 1, 5) == NOTE.start + (2 * 4 + 1) * 20 + 10 + 5


@pytest.mark.parametrize("bad", [(4, 0, 0, 0), (0, 3, 0, 0), (0, 0, 2, 0), (0, 0, 0, 9), (-1, 0, 0, 0)])
def test_note_token_rejects_what_the_game_cannot_show(bad):
    with pytest.raises(ValueError):
        note_token(*bad)


def test_time_token_bounds():
    assert time_token(0) == TIME.start and time_token(TIME.size - 1) == TIME.stop - 1
    for bad in (-1, TIME.size):
        with pytest.raises(ValueError):
            time_token(bad)
    with pytest.raises(ValueError):
        token_tick(NOTE.start)


def test_audio_tokens_interleave_codebooks_frame_by_frame():
    codes = np.array([[0, 0], [5, 7], [1023, 1023]])
    assert audio_tokens(codes).tolist() == [
        AUDIO.start,
        AUDIO.start + 1024,
        AUDIO.start + 5,
        AUDIO.start + 1024 + 7,
        AUDIO.start + 1023,
        AUDIO.stop - 1,
    ]


notes = st.builds(
    ChunkNote, st.integers(0, TIME.size - 1), st.integers(0, 3), st.integers(0, 2), st.integers(0, 1), st.integers(0, 8)
)


@given(notes)
def test_every_valid_note_round_trips(note):
    fields = (note.x, note.y, note.color, note.direction)
    assert note_fields(note_token(*fields)) == fields
    assert token_tick(time_token(note.tick)) == note.tick
    assert decode_notes(encode_notes([note])) == [note]


@given(st.lists(notes, max_size=60), st.lists(st.integers(0, TIME.size - 1), max_size=40))
def test_every_valid_note_list_round_trips_on_any_grid(chunk, grid):
    tokens = encode_notes(chunk, grid)
    assert note_tokens_error(tokens) is None
    decoded = decode_notes(tokens)
    assert decoded == sorted(set(decoded), key=lambda n: (n.tick, object_token(n)))
    assert set(decoded) == set(chunk)
    # every grid tick and note tick is written once, in order
    ticks = [token_tick(t) for t in tokens if t in TIME]
    assert ticks == sorted(set(grid) | {n.tick for n in chunk})
    assert encode_notes(decoded, grid) == tokens
    assert encode_notes(reversed(chunk), grid) == tokens  # order of input does not matter


def test_validity_check_names_each_problem():
    a, b = note_token(0, 0, 0, 1), note_token(1, 0, 0, 1)
    assert note_tokens_error([]) is None
    assert note_tokens_error([0, a, b, 12, 48, a]) is None  # tick 12 is an empty grid tick
    assert "before any time token" in note_tokens_error([a, 0])
    assert "neither" in note_tokens_error([0, BOS])
    assert "not after" in note_tokens_error([48, a, 0, a])  # time goes back
    assert "not after" in note_tokens_error([0, a, 0, b])  # a tick written twice
    assert "canonical order" in note_tokens_error([0, b, a])  # types at one tick not increasing
    assert "canonical order" in note_tokens_error([0, a, a])  # repeated
    assert "reserved direction" in note_tokens_error([0, NOTE.start + 9])
    assert "past the chunk end" in note_tokens_error([64 * 48, a], chunk_ticks=64 * 48)
    assert "neither" in note_tokens_error([0, PAD])


def test_every_object_kind_round_trips_with_its_length():
    from data import ChunkArc, ChunkBomb, ChunkChain, ChunkWall, object_tokens

    chunk = [
        ChunkNote(0, 1, 0, 0, 1),
        ChunkBomb(0, 3, 2),
        ChunkWall(0, 0, 2, 4, 3, 96),
        ChunkNote(24, 1, 1, 0, 0),
        ChunkArc(24, 0),
        ChunkChain(24, 0, 1, 2, 3, 6),
    ]
    tokens = encode_notes(reversed(chunk), [0, 12, 24])
    assert note_tokens_error(tokens) is None
    assert decode_notes(tokens) == chunk  # canonical order: by tick, then type id (notes, bombs, walls, arcs, chains)
    assert len(object_tokens(chunk[2])) == 2 and len(object_tokens(chunk[1])) == 1  # a wall's length follows it
    assert len(data.token_names()) == VOCAB_SIZE == len(set(data.token_names()))
    wall = object_tokens(chunk[2])[0]
    assert "length token must follow" in note_tokens_error([0, wall, 0])
    assert "lacks its length" in note_tokens_error([0, wall])
    with pytest.raises(ValueError):
        decode_notes([0, wall])
    with pytest.raises(ValueError):
        object_tokens(ChunkWall(0, 0, 0, 1, 6, 10))  # taller than the game's 5 rows
