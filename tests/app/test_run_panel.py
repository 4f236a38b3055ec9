from app.run_panel import DEFAULT_VOCAB, RunPanel
from engine.config import PRESETS


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
