"""Playability: the repair pass for generated levels and the rules of play it shares with the decoding
grammar (data.NoteGrammar) and the scorecard."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable

import msgspec

from maps import (
    CUT_STEP,
    DOT,
    DOWN,
    DOWN_LEFT,
    DOWN_RIGHT,
    GRID_COLUMNS,
    GRID_ROWS,
    LEFT,
    PPQ,
    RIGHT,
    UP,
    UP_LEFT,
    UP_RIGHT,
    Arc,
    Bomb,
    Chain,
    Note,
    Objects,
    Obstacle,
    TempoMap,
    along_cut,
    slot,
)

OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT, UP_LEFT: DOWN_RIGHT, DOWN_RIGHT: UP_LEFT}
OPPOSITE |= {UP_RIGHT: DOWN_LEFT, DOWN_LEFT: UP_RIGHT}
# a forehand swing per colour (0 left hand, 1 right hand): downward, or across the body;
# every other arrow is a backhand. A hand alternates forehand and backhand.
FOREHAND = {0: {DOWN, DOWN_LEFT, DOWN_RIGHT, RIGHT}, 1: {DOWN, DOWN_LEFT, DOWN_RIGHT, LEFT}}
BEAT_EPSILON = 1e-6  # beats: map files round beats to a few decimals, far coarser than this
MIN_NOTE_SECONDS = 1.5  # no note before this much audio: players need time to get ready
REPAIRS = (
    "early notes dropped",
    "duplicates removed",
    "cell collisions resolved",
    "dense notes thinned",
    "stack directions unified",
    "parity flips",
)
OBJECT_REPAIRS = (
    "early bombs and walls dropped",
    "bombs in a hand's way dropped",
    "walls cut short of a note",
    "walls dropped",
    "broken arcs dropped",
    "broken chains dropped",
)
# the rules of play for the other objects, in beats and cells (x 0..3, y 0..2; walls reach rows 3-4 above)
SWING_BEATS = 0.5  # after a note, its hand sweeps its cell and the next along its cut this long: no bomb there
MIN_WALL_BEATS = 1 / 8  # shorter walls flash past
MAX_CHAIN_BEATS = 1.0  # a chain's tail at most a beat after its head (the fixture maps' chains: 1/8 and 1/4 beat)
WALL_ROWS = 5  # a wall's rows: the 3 note rows and 2 above (full height: y 0, height 5; crouch: y 2, height 3)
# a wall over the middle two lanes' lower two rows stands between the player's eyes and the notes coming
VISION_CELLS = frozenset((x, y) for x in (1, 2) for y in (0, 1))


def swing_cells(x: int, y: int, direction: int) -> list[tuple[int, int]]:
    """The grid cells a hand passes through cutting a note at (x, y): its own, and the next along its cut."""
    dx, dy = CUT_STEP.get(direction, (0, 0))
    beyond = [(x + dx, y + dy)] if (dx, dy) != (0, 0) and 0 <= x + dx < GRID_COLUMNS and 0 <= y + dy < GRID_ROWS else []
    return [(x, y), *beyond]


def wall_cells(x: int, y: int, width: int, height: int) -> set[tuple[int, int]]:
    """The note-grid cells a wall stands over."""
    return {
        (cx, cy)
        for cx in range(max(x, 0), min(x + width, GRID_COLUMNS))
        for cy in range(max(y, 0), min(y + height, GRID_ROWS))
    }


def wall_fits(wall: Obstacle) -> bool:
    """Whether a wall lies inside the lanes and rows, lasts at least MIN_WALL_BEATS and hides no note."""
    inside = 0 <= wall.x and 1 <= wall.width and wall.x + wall.width <= GRID_COLUMNS
    inside &= 0 <= wall.y < GRID_ROWS and 1 <= wall.height and wall.y + wall.height <= WALL_ROWS
    cells = wall_cells(wall.x, wall.y, wall.width, wall.height)
    return inside and wall.duration >= MIN_WALL_BEATS - BEAT_EPSILON and not cells & VISION_CELLS


def thinned(notes: list[Note], max_notes_per_beat: float | None) -> list[Note]:
    """notes, in time order -> those kept when no span of one beat may hold more than max_notes_per_beat
    (rounded down): each note in turn is kept if the beat before it (exclusive) leaves room."""
    if max_notes_per_beat is None:
        return notes
    cap, kept, recent = math.floor(max_notes_per_beat), [], deque()  # recent: beats of kept notes in the last beat
    for note in notes:
        while recent and recent[0] <= note.beat - 1 + BEAT_EPSILON:
            recent.popleft()
        if len(recent) < cap:
            kept.append(note)
            recent.append(note.beat)
    return kept


def swings(notes: Iterable[Note]) -> list[list[Note]]:
    """Notes -> swings in time order: the notes of one colour at one tick, one swing each."""
    by_swing: dict[tuple[int, int], list[Note]] = {}
    for note in sorted(notes):
        by_swing.setdefault((round(note.beat * PPQ), note.color), []).append(note)
    return [by_swing[key] for key in sorted(by_swing)]


def repair(
    notes: Iterable[Note], tempo: TempoMap | None = None, max_notes_per_beat: float | None = None
) -> tuple[list[Note], Counter]:
    """Notes -> (notes a player can play, repairs made by kind in REPAIRS).

    In order: with a tempo (generated notes), notes in the first MIN_NOTE_SECONDS of audio are dropped;
    exact duplicates removed; of notes sharing a cell at one tick the first (by colour, direction) stays;
    with max_notes_per_beat, a note that would make any one-beat span hold more than that many
    (rounded down) is dropped, earlier notes first kept (the grammar keeps this inside a window; this
    keeps it across window seams); arrows of one colour at one tick take the first arrow's direction
    (dots stay dots); a hand that would swing forehand (or backhand) twice in a row has its swing
    flipped to the opposite direction (a dot swings either way and keeps the hand alternating).
    The scorecard counts a map's problems with these same definitions (no tempo: nothing dropped early).
    """
    first_beat = tempo.beat_at(MIN_NOTE_SECONDS) if tempo is not None else 0.0
    repairs: Counter = Counter({kind: 0 for kind in REPAIRS})
    notes = list(notes)
    kept = [n for n in notes if n.beat >= first_beat]
    repairs["early notes dropped"] = len(notes) - len(kept)
    unique = sorted(set(kept))
    repairs["duplicates removed"] = len(kept) - len(unique)
    by_slot: dict[tuple[int, int, int], Note] = {}
    for note in unique:
        by_slot.setdefault(slot(note), note)
    repairs["cell collisions resolved"] = len(unique) - len(by_slot)
    spread = thinned(sorted(by_slot.values()), max_notes_per_beat)
    repairs["dense notes thinned"] = len(by_slot) - len(spread)
    result, last_forehand = [], {}  # last_forehand: colour -> the hand's previous swing
    for swing in swings(spread):
        arrows = [n for n in swing if n.direction != DOT]
        direction = arrows[0].direction if arrows else DOT
        repairs["stack directions unified"] += sum(n.direction != direction for n in arrows)
        color = swing[0].color
        forehand = None if direction == DOT else direction in FOREHAND[color]
        if forehand is not None and last_forehand.get(color) == forehand:
            direction, forehand = OPPOSITE[direction], not forehand
            repairs["parity flips"] += 1
        if forehand is None and color in last_forehand:
            forehand = not last_forehand[color]
        if forehand is not None:
            last_forehand[color] = forehand
        result += [msgspec.structs.replace(n, direction=direction) if n.direction != DOT else n for n in swing]
    return sorted(result), repairs


def bomb_clear(bomb: Bomb, notes: list[Note], walls: list[Obstacle]) -> bool:
    """Whether no hand sweeps the bomb's cell (a note in the SWING_BEATS before it) and no wall stands over it."""
    for note in notes:
        if note.beat - BEAT_EPSILON <= bomb.beat <= note.beat + SWING_BEATS and (bomb.x, bomb.y) in swing_cells(
            note.x, note.y, note.direction
        ):
            return False
    return not any(
        w.beat <= bomb.beat < w.beat + w.duration and (bomb.x, bomb.y) in wall_cells(w.x, w.y, w.width, w.height)
        for w in walls
    )


def notes_under(wall: Obstacle, notes: list[Note]) -> list[float]:
    """Beats of the notes that fall in a cell the wall stands over while it stands."""
    cells = wall_cells(wall.x, wall.y, wall.width, wall.height)
    end = wall.beat + wall.duration
    return [n.beat for n in notes if wall.beat - BEAT_EPSILON <= n.beat < end and (n.x, n.y) in cells]


def arc_whole(arc: Arc, notes_by_slot: dict) -> bool:
    """Whether both ends of the arc are notes (notes_by_slot: (tick, x, y, colour) -> Note) of one colour, in order."""
    ends = all((*slot(end), end.color) in notes_by_slot for end in (arc.head, arc.tail))
    return ends and arc.head.beat < arc.tail.beat and arc.head.color == arc.tail.color


def chain_whole(chain: Chain, notes_by_slot: dict) -> bool:
    """Whether the chain's head is an arrow note whose cut points at its tail, within MAX_CHAIN_BEATS."""
    head = notes_by_slot.get((*slot(chain.head), chain.head.color))
    along = head is not None and along_cut(head.direction, chain.tail_x - head.x, chain.tail_y - head.y)
    return along and head.beat < chain.tail_beat <= head.beat + MAX_CHAIN_BEATS + BEAT_EPSILON


def _wall_kept(wall: Obstacle, notes: list[Note]) -> Obstacle | None:
    """The wall, cut to end where the first note under it falls (None when that leaves too short a wall)."""
    under = notes_under(wall, notes)
    if not under:
        return wall
    return wall._replace(duration=min(under) - wall.beat) if min(under) - wall.beat >= MIN_WALL_BEATS else None


def _chain_following(chain: Chain, notes_by_slot: dict) -> Chain:
    """The chain on its head as repaired (notes_by_slot: (tick, x, y, colour) -> Note): where a parity flip
    turned the head to the opposite cut, the tail is mirrored through the head so that the chain still runs
    along the cut; unchanged where the mirror leaves the grid (chain_whole then drops it)."""
    head = notes_by_slot.get((*slot(chain.head), chain.head.color))
    if head is None:
        return chain
    x, y = 2 * head.x - chain.tail_x, 2 * head.y - chain.tail_y
    flipped = head.direction == OPPOSITE.get(chain.head.direction)
    if flipped and 0 <= x < GRID_COLUMNS and 0 <= y < GRID_ROWS:
        return chain._replace(head=head, tail_x=x, tail_y=y)
    return chain._replace(head=head)


def repair_objects(
    objects: Objects, tempo: TempoMap | None = None, max_notes_per_beat: float | None = None
) -> tuple[Objects, Counter]:
    """A level's objects -> (objects a player can play, repairs by kind in REPAIRS + OBJECT_REPAIRS).

    The notes go through repair(); then, with a tempo, bombs and walls that start in the first MIN_NOTE_SECONDS
    are dropped as early notes are; walls outside the lanes, too short or hiding notes (wall_fits) are
    dropped and a wall over a note cut to end at it (dropped when too short); bombs where a hand sweeps or
    under a wall dropped; arcs and chains follow their notes as repaired (an arc needs both ends, of one
    colour and in order; a chain its head, an arrow whose cut points at its tail), else they are dropped.
    Within a window the grammar already keeps these rules; this keeps them across window seams.
    """
    notes, repairs = repair(objects.notes, tempo, max_notes_per_beat)
    repairs.update({kind: 0 for kind in OBJECT_REPAIRS})
    first_beat = tempo.beat_at(MIN_NOTE_SECONDS) if tempo is not None else 0.0
    early_walls = sum(w.beat < first_beat for w in objects.obstacles)
    early_bombs = sum(b.beat < first_beat for b in objects.bombs)
    repairs["early bombs and walls dropped"] = early_walls + early_bombs
    fitting = [w for w in sorted(set(objects.obstacles)) if w.beat >= first_beat and wall_fits(w)]
    walls = [w for w in map(lambda w: _wall_kept(w, notes), fitting) if w is not None]
    repairs["walls dropped"] = len(objects.obstacles) - early_walls - len(walls)
    repairs["walls cut short of a note"] = sum(w not in fitting for w in walls)
    bombs = [b for b in sorted(set(objects.bombs)) if b.beat >= first_beat and bomb_clear(b, notes, walls)]
    repairs["bombs in a hand's way dropped"] = len(objects.bombs) - early_bombs - len(bombs)
    by_slot = {(*slot(n), n.color): n for n in notes}
    arcs = [
        arc._replace(head=by_slot[(*slot(arc.head), arc.head.color)], tail=by_slot[(*slot(arc.tail), arc.tail.color)])
        for arc in objects.arcs
        if arc_whole(arc, by_slot)
    ]
    repairs["broken arcs dropped"] = len(objects.arcs) - len(arcs)
    chains = [c for c in (_chain_following(c, by_slot) for c in objects.chains) if chain_whole(c, by_slot)]
    repairs["broken chains dropped"] = len(objects.chains) - len(chains)
    return Objects(notes, bombs, walls, sorted(arcs), sorted(chains)), repairs
