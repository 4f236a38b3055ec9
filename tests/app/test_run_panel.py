from types import SimpleNamespace

import psutil
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget

from app.run_panel import DEFAULT_VOCAB, RunPanel, describe_alphabet
from app.worker import FINISHED
from engine import memory
from engine.config import PRESETS, TrainConfig, format_bytes
from engine.memory import memory_needed


def test_entries_and_counts_agree_before_and_after_the_corpus_is_read(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_preset("small")
    small = PRESETS["small"]

    def shows(vocab: int) -> bool:
        count = f"{small.model_for(vocab).n_params:,} parameters"
        return panel.preset.currentText() == small.summary(vocab) and count in panel.model_label.text()

    assert shows(DEFAULT_VOCAB)  # the built-in corpus is still being read
    panel.set_corpus("corpus.txt", 10_000, 96)
    assert shows(96)
    # a run in view, trained on a text of 42 characters: the list counted at the open text's 96
    panel.show_configs(small.model_for(42), small.train)
    assert shows(42)
    panel.batch.setValue(8)  # a new run's settings, on the open text
    assert shows(96)


def test_fewer_iterations_shorten_the_warmup_so_that_a_short_run_still_decays(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_preset("tiny")  # 2,000 iterations, 100 of them warmup
    assert panel.configs(DEFAULT_VOCAB)[1].warmup_iters == 100
    panel.iters.setValue(200)
    assert panel.configs(DEFAULT_VOCAB)[1].warmup_iters == 10


def test_the_memory_training_takes_follows_the_batch_and_warns_past_what_is_free(qtbot, monkeypatch):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_preset("small")
    panel.batch.setValue(64)
    model, train = panel.configs(DEFAULT_VOCAB)
    text = panel.model_label.text().replace("\N{NO-BREAK SPACE}", " ")
    assert f"about {format_bytes(memory_needed(model, train))} to train at batch 64" in text
    assert "can spare" not in text
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=10**7))
    monkeypatch.setattr(memory, "cgroup_room", lambda: None)
    panel.batch.setValue(65)
    assert "more than the 9 MB this machine can spare" in panel.model_label.text().replace(
        "\N{NO-BREAK SPACE}", " "
    )


def test_the_memory_warning_wraps_in_a_narrow_panel_rather_than_being_cut_off(qtbot, monkeypatch):
    """An unbreakable bold line wider than the panel left the layout one line short."""
    monkeypatch.setattr(memory, "available_memory", lambda: 20 * 10**6)
    splitter = QSplitter(Qt.Orientation.Horizontal)
    qtbot.addWidget(splitter)
    panel = RunPanel()
    panel.setMaximumWidth(280)  # the window's narrowest
    splitter.addWidget(panel)
    splitter.addWidget(QWidget())
    splitter.resize(1000, 800)
    splitter.show()
    for name in ("small", "large"):
        panel.set_preset(name)
        label = panel.model_label
        assert "this machine can spare" in label.text().replace("\N{NO-BREAK SPACE}", " ")
        qtbot.waitUntil(lambda label=label: label.height() >= label.heightForWidth(label.width()))


def test_a_long_file_name_wraps_in_a_narrow_panel(qtbot):
    splitter = QSplitter(Qt.Orientation.Horizontal)
    qtbot.addWidget(splitter)
    panel = RunPanel()
    panel.setMaximumWidth(280)
    splitter.addWidget(panel)
    splitter.addWidget(QWidget())
    splitter.resize(1000, 800)
    splitter.show()
    name = "shakespeare_complete_works_cleaned_utf8_final_v2.txt"
    panel.set_corpus(name, 5_400_000, 91)
    label = panel.corpus_label
    qtbot.waitUntil(lambda: label.height() >= label.heightForWidth(label.width()))
    assert label.minimumSizeHint().width() <= label.width()  # no word wider than the label
    assert label.toolTip() == name


def test_a_file_name_is_shown_as_text_not_markup():
    from app.run_panel import breakable

    shown = breakable("notes <draft> & more.txt").replace("\N{ZERO WIDTH SPACE}", "")
    assert shown == "notes &lt;draft&gt; &amp; more.txt"


def test_choosing_a_preset_keeps_the_seed_a_person_typed(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    assert panel.seed.value() == TrainConfig().seed  # what chargpt train takes by default
    panel.seed.setValue(7)
    panel.set_preset("small")
    panel.set_preset("tiny")
    assert panel.seed.value() == 7 and panel.batch.value() == PRESETS["tiny"].train.batch_size


def test_a_learning_rate_typed_out_of_range_becomes_the_nearest_bound(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    for typed, taken in (("5e-4", 5e-4), ("1e-9", 1e-7), ("20", 10.0), ("0.003", 3e-3)):
        panel.lr.lineEdit().selectAll()
        qtbot.keyClicks(panel.lr.lineEdit(), typed)
        qtbot.keyClick(panel.lr.lineEdit(), Qt.Key.Key_Return)
        assert panel.lr.value() == taken, typed  # 1e-9 went through "1", and 1 stayed


def test_a_learning_rate_being_typed_is_left_alone_when_the_model_label_is_redrawn(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.lr.lineEdit().selectAll()
    qtbot.keyClicks(panel.lr.lineEdit(), "0.00")  # on the way to 0.0005
    panel.set_corpus("other.txt", 1000, 40)  # a corpus load finishing: the label is redrawn
    assert panel.lr.lineEdit().text() == "0.00"


def test_the_controls_stay_put_when_the_preset_or_the_text_changes(qtbot):
    """A description that wrapped for some presets and not others moved every control below it,
    under the pointer: a click aimed at Iterations landed between two fields."""
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 700)  # the panel at its narrowest in the window
    panel.show()
    places = set()
    for name in ("Python standard library docs (built in)", "story.txt"):
        panel.set_corpus(name, 1_501_356, 96)
        for preset in PRESETS:
            panel.set_preset(preset)
            qtbot.wait(10)  # the layout settles
            places.add(panel.iters.mapTo(panel, panel.iters.rect().topLeft()).y())
    assert len(places) == 1


def test_continue_says_what_keeps_it_off(qtbot):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_corpus("corpus.txt", 10_000, 96)
    tiny = PRESETS["tiny"]
    panel.show_configs(tiny.model_for(96), tiny.train)
    panel.set_state(FINISHED, has_model=True, done=tiny.train.max_iters)
    assert not panel.pause.isEnabled()
    assert "Raise Iterations above 2,000" in panel.pause.toolTip()
    panel.iters.setValue(3000)
    assert panel.pause.isEnabled() and panel.continue_blocker() == ""
    panel.lr.setValue(0.01)
    panel.seed.setValue(7)
    assert not panel.pause.isEnabled()
    assert "the learning rate and the seed changed since" in panel.pause.toolTip()


def test_load_says_why_it_is_off_while_a_run_is_on(qtbot):
    """Ctrl+L did nothing while a loaded checkpoint sat paused, and nothing said why."""
    from app.worker import IDLE, PAUSED

    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_state(PAUSED, has_model=True, done=5)
    assert not panel.load.isEnabled() and "Stop the run in the window first" in panel.load.toolTip()
    panel.set_state(IDLE, has_model=False)
    assert panel.load.isEnabled() and "Stop" not in panel.load.toolTip()


def test_the_corpus_tooltip_lists_its_characters_as_a_prompt_may_use_them(qtbot):
    """A prompt in a character the text lacks is refused: here is what it has, readably."""
    panel = RunPanel()
    qtbot.addWidget(panel)
    chars = sorted({"\n", " ", "\t", "a", "é", "\u0301", "\u200d", "漢"})
    panel.set_corpus("story.txt", 1000, len(chars), alphabet=chars)
    tip = panel.corpus_label.toolTip()
    assert tip.startswith("story.txt\n\nIts 8 characters")
    assert tip.splitlines()[-1] == "⇥⏎␣aé◌\u0301[U+200D]漢"
    many = [chr(c) for c in range(0x4E00, 0x4E00 + 1000)]
    assert describe_alphabet(many).endswith("\n… and 600 more")
    assert max(len(line) for line in describe_alphabet(many).splitlines()[1:-1]) == 40
