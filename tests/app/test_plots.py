"""The plots on a long history: created once, downsampled, clipped to the view."""

import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QPalette, QWheelEvent
from PySide6.QtWidgets import QApplication

from app.metrics_store import MetricsStore
from app.plots import (
    ORANGE,
    PLOT_SHARE,
    REDRAW_MS,
    RSS_MIN_RANGE_MB,
    SLOWEST_MS,
    TrainingPlots,
    redraw_interval_ms,
)
from tests.app.conftest import run_qt_snippet
from tests.app.test_metrics_store import records


def shown(qtbot, store: MetricsStore) -> TrainingPlots:
    """Plots of ``store`` at a window's size, shown (offscreen)."""
    plots = TrainingPlots(store)
    qtbot.addWidget(plots)
    plots.resize(900, 600)
    plots.show()
    return plots


def test_a_long_history_is_drawn_downsampled_and_the_view_follows_until_panned(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 200_001, val_loss=None))
    qtbot.waitUntil(lambda: plots.loss_raw.xData is not None and len(plots.loss_raw.xData) == 200_000)
    for curve in (plots.loss_raw, plots.loss_smooth, plots.step_time, plots.step_median, plots.mem_rss):
        assert curve.opts["autoDownsample"] and curve.opts["downsampleMethod"] == "peak"
        assert curve.opts["clipToView"]
    np.testing.assert_array_equal(plots.step_median.yData, store.step_median.view())
    x_min, x_max = plots.loss_plot.viewRange()[0]
    assert x_min <= 1 and x_max >= 200_000
    assert len(plots.loss_raw.getData()[0]) < 50_000  # what is drawn is a fraction of the points

    plots.loss_plot.getViewBox().scaleBy(x=0.1)  # as a wheel zoom would
    plots.loss_plot.getViewBox().sigRangeChangedManually.emit([True, False])
    assert not plots.following and plots.follow_button.isVisibleTo(plots)
    store.extend(records(200_001, 200_101))
    qtbot.waitUntil(lambda: len(plots.loss_raw.xData) == 200_100)
    assert plots.loss_plot.viewRange()[0][1] < 200_000  # the person's zoom is kept
    qtbot.mouseClick(plots.follow_button, Qt.MouseButton.LeftButton)
    assert plots.following and plots.loss_plot.viewRange()[0][1] >= 200_100


def test_hover_shows_the_values_of_the_nearest_iteration(qtbot):
    store = MetricsStore()
    plots = TrainingPlots(store)
    qtbot.addWidget(plots)
    store.extend(records(1, 101, lr=1.5e-3, grad_norm=0.75))
    plots.show_values_at(41.7)
    text = plots.hover_label.line
    assert "iter 42" in text and "10.0 ms/iter (median 10.0)" in text
    assert "lr 0.0015" in text and "grad norm 0.75" in text


def test_the_readout_shows_the_newest_iteration_unless_the_mouse_is_over_a_plot(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))
    plots.redraw()
    assert plots.hover_label.line.startswith("iter 100 · loss")  # a run's numbers, live
    assert "smoothed 4.9250 (at 75)" in plots.hover_label.line  # the newest with a whole window
    assert not any(line.isVisible() for line in plots.cursors)
    plots.show_values_at(41.7)
    assert plots.hover_label.line.startswith("iter 42") and all(line.isVisible() for line in plots.cursors)
    store.extend(records(101, 111))
    plots.redraw()
    assert plots.hover_label.line.startswith("iter 42")  # kept while the mouse is there
    QApplication.sendEvent(plots.canvas, QEvent(QEvent.Type.Leave))
    assert plots.hover_label.line.startswith("iter 110")  # it stayed at 42 after the mouse left
    assert not any(line.isVisible() for line in plots.cursors)


def test_follow_newest_brings_the_readout_to_the_newest_iteration_under_a_resting_mouse(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))
    plots.show_values_at(40)  # hovered, and the mouse stays there
    plots.follow()  # Ctrl+F
    assert plots.hover_label.line.startswith("iter 100")
    assert not any(line.isVisible() for line in plots.cursors)
    store.extend(records(101, 111))
    plots.redraw()
    assert plots.hover_label.line.startswith("iter 110")  # and it goes on following


def test_a_readout_too_long_for_its_width_leaves_whole_values_off_and_says_so(qtbot):
    """At 1366x768 the line ended "RSS 168 I", cut mid-word with nothing to say so."""
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))
    plots.redraw()
    label = plots.hover_label
    whole = label.line
    plots.resize(400, plots.height())
    qtbot.waitUntil(lambda: label.text() != whole)
    shown_parts = label.text().split(" · ")
    assert shown_parts[-1] == "…" and 1 < len(shown_parts) < len(whole.split(" · "))
    assert whole.startswith(" · ".join(shown_parts[:-1]) + " · ")  # whole values, in order
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
    assert label.toolTip() == whole
    plots.resize(3000, plots.height())
    qtbot.waitUntil(lambda: label.text() == whole)


def test_the_readout_names_the_latest_validation_and_where_it_was_taken(qtbot):
    store = MetricsStore()
    plots = TrainingPlots(store)
    qtbot.addWidget(plots)
    store.extend(records(1, 51))
    store.extend(records(51, 52, val_loss=2.5))
    store.extend(records(52, 101))
    plots.show_values_at(51)
    assert "val 2.5000 ·" in plots.hover_label.line
    plots.show_values_at(80)  # one point in a thousand is hard to hover onto
    assert "val 2.5000 (at 51)" in plots.hover_label.line
    plots.show_values_at(20)
    assert "val" not in plots.hover_label.line


def test_redraws_are_spaced_by_what_they_cost_repaints_included(qtbot):
    assert redraw_interval_ms(0.0) == REDRAW_MS
    assert redraw_interval_ms(0.010) == round(10 / PLOT_SHARE)
    assert redraw_interval_ms(10.0) == SLOWEST_MS

    store = MetricsStore()
    plots = TrainingPlots(store)
    qtbot.addWidget(plots)
    plots.canvas.take_paint_s()
    store.extend(records(1, 101))
    plots.canvas.paint_s = 0.2  # as if the repaints since the last redraw had been slow
    plots.redraw()
    assert plots.timer.interval() == SLOWEST_MS
    assert plots.canvas.paint_s == 0.0  # counted once


def test_another_runs_smoothed_loss_is_drawn_to_compare_until_cleared(qtbot):
    plots = TrainingPlots(MetricsStore())
    qtbot.addWidget(plots)
    other = MetricsStore()
    other.extend(records(1, 301))
    plots.set_reference("tiny-run", other)
    curve = plots.loss_reference
    legend = [label.text for _, label in plots.loss_plot.legend.items]
    assert "tiny-run" in legend
    plots.set_reference("<b>run", other)  # a folder's name is text, not markup
    assert "&lt;b&gt;run" in [label.text for _, label in plots.loss_plot.legend.items]
    plots.set_reference("tiny-run", other)
    curve = plots.loss_reference
    np.testing.assert_allclose(curve.xData, np.arange(1, 301))
    # no run in the window: the axis spans the one compared with (it was 0 to 1, the curve unseen)
    lo, hi = plots.loss_plot.getViewBox().viewRange()[0]
    assert lo < 10 and hi > 290
    np.testing.assert_allclose(curve.yData, other.smoothed_loss(51))
    assert plots.smoothing_label.text() == "51 it"
    plots.smoothing.setValue(2)  # two iterations each side
    np.testing.assert_allclose(curve.yData, other.smoothed_loss(5))
    assert plots.smoothing_label.text() == "5 it"
    plots.reset()  # a new run in the window: the comparison stays
    assert plots.loss_reference is curve and curve in plots.loss_plot.items
    plots.clear_reference()
    assert curve not in plots.loss_plot.items
    assert "tiny-run" not in [label.text for _, label in plots.loss_plot.legend.items]


def test_each_legend_sits_above_its_data_and_gives_way_in_a_short_window(qtbot):
    """Inside a plot, the legend hid the newest data, where the lines end, under its corner."""
    plots = shown(qtbot, MetricsStore())

    def above_the_data() -> bool:
        return all(
            p.legend.isVisible()
            and p.legend.sceneBoundingRect().bottom() <= p.getViewBox().sceneBoundingRect().top()
            for p in plots.plots
        )

    qtbot.waitUntil(above_the_data)
    other = MetricsStore()
    other.extend(records(1, 301))
    plots.set_reference("another run, to compare with", other)  # a second row of entries
    assert plots.loss_plot.legend.layout.rowCount() == 2
    qtbot.waitUntil(above_the_data)
    plots.resize(900, 260)  # too short to spare the rows: the data keeps the height
    qtbot.waitUntil(lambda: not any(p.legend.isVisible() for p in plots.plots))
    assert all(p.layout.rowMaximumHeight(0) == 0 for p in plots.plots)
    plots.clear_reference()
    for height in range(260, 600, 20):  # the lowest plot, shortest for its axis, is not left out
        plots.resize(900, height)
        qtbot.wait(20)
        assert len({p.legend.isVisible() for p in plots.plots}) == 1, height
    plots.resize(900, 600)
    qtbot.waitUntil(above_the_data)
    assert plots.loss_plot.layout.rowMaximumHeight(0) < 30  # one row again


def test_a_legend_wider_than_its_plot_gives_way_rather_than_run_off_its_left(qtbot):
    """At the window's least width, a run to compare (with its long name) cut off the first
    entries of the loss legend."""
    plots = shown(qtbot, MetricsStore())
    other = MetricsStore()
    other.extend(records(1, 301))
    plots.set_reference("2026-11-27_02-43-58_small · another text", other)
    legend = plots.loss_plot.legend
    qtbot.waitUntil(legend.isVisible)
    plots.resize(450, 600)
    qtbot.waitUntil(lambda: not any(p.legend.isVisible() for p in plots.plots))
    plots.resize(1200, 600)

    def whole_above_the_data() -> bool:
        shown_at, data = legend.sceneBoundingRect(), plots.loss_plot.getViewBox().sceneBoundingRect()
        inside = data.left() <= shown_at.left() and shown_at.bottom() <= data.top()
        return all(p.legend.isVisible() for p in plots.plots) and inside

    qtbot.waitUntil(whole_above_the_data)


def test_an_axis_too_short_for_its_name_keeps_its_unit_alone(qtbot):
    """A name longer than its plot is tall ran over the next plot's (a 600 px screen)."""
    plots = TrainingPlots(MetricsStore())
    qtbot.addWidget(plots)
    plots.resize(900, 700)
    plots.show()
    left = plots.time_plot.getAxis("left")
    qtbot.waitUntil(lambda: left.labelText == "step time")
    plots.resize(900, 260)
    qtbot.waitUntil(lambda: left.labelText == "")
    assert "(s)" in left.labelString() or "(ms)" in left.labelString()
    # the legend still names the plot (at a window's default size on a 768 px screen, nothing did)
    assert "step time" in [label.text for _, label in plots.time_plot.legend.items]
    assert plots.mem_plot.getAxis("left").labelText == ""
    plots.resize(900, 350)  # a laptop's: "(ms)" alone, where "time (ms)" fits
    qtbot.waitUntil(lambda: left.labelText == "time")
    plots.resize(900, 700)
    qtbot.waitUntil(lambda: left.labelText == "step time")
    assert plots.mem_plot.getAxis("left").labelText == "arena"


def test_an_axis_name_is_given_in_full_only_where_it_fits_as_drawn(qtbot):
    """Measured without the text's margins, or before the step times made their unit "ms",
    "step time (ms)" was given at heights that it overran, into the loss axis' name."""
    store = MetricsStore()
    plots = shown(qtbot, store)
    for height in range(300, 620, 8):
        store.clear()
        plots.reset()
        plots.redraw()
        plots.resize(900, height)  # fitted while the unit is "s"
        qtbot.wait(10)
        store.extend(records(1, 101))  # step times of 10 ms: the unit becomes ms
        plots.redraw()
        for axis, _, view in plots._named_axes:
            if axis.labelText:
                assert axis.label.sceneBoundingRect().height() <= view.height(), (height, axis.labelString())


def test_the_plots_take_the_colours_of_a_dark_palette(qtbot):
    plots = TrainingPlots(MetricsStore())
    qtbot.addWidget(plots)
    assert plots.canvas.backgroundBrush().color() == plots.palette().color(QPalette.ColorRole.Base)
    dark = QPalette(plots.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor(30, 30, 32))
    dark.setColor(QPalette.ColorRole.Text, QColor(220, 220, 220))
    plots.setPalette(dark)
    assert plots.canvas.backgroundBrush().color() == QColor(30, 30, 32)
    ink = plots.loss_plot.getAxis("left").pen().color()
    assert ink.lightness() > 100  # readable on the dark background
    assert plots.mem_rss.opts["pen"].color() == ink
    assert plots.loss_plot.legend.opts["labelTextColor"] == ink
    assert plots.chance.label.fill.color().getRgb()[:3] == (30, 30, 32)  # a dark card under its text


def test_the_saved_image_is_the_plots_as_shown_without_the_hover_line(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))
    plots.redraw()
    plain = QImage.fromData(plots.image())
    assert plain.size() == plots.canvas.size()
    plots.show_values_at(50)  # the hover line across the three plots
    hovered = plots.canvas.grab().toImage().convertToFormat(plain.format())
    assert hovered != plain
    assert QImage.fromData(plots.image()) == plain  # left out of the image
    assert all(line.isVisible() for line in plots.cursors)  # and still shown in the window
    captioned = QImage.fromData(plots.image(caption="tiny · corpus.txt · iteration 100"))
    top = captioned.height() - plain.height()
    assert top > 0 and captioned.width() == plain.width()
    strip = {captioned.pixel(x, y) for x in range(0, 300) for y in range(top)}
    assert len(strip) > 1  # the caption's text is drawn there
    below = captioned.copy(0, top, plain.width(), plain.height()).convertToFormat(plain.format())
    assert below == plain  # the plots under it, as they are


def test_the_legend_marks_validation_in_its_colour_before_the_first_validation(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))  # no validation loss yet
    plots.redraw()
    legend = plots.canvas.mapFromScene(plots.loss_plot.legend.sceneBoundingRect()).boundingRect()
    image = plots.canvas.grab().toImage()
    colours = {
        image.pixelColor(x, y).getRgb()[:3]
        for x in range(legend.left(), legend.right())
        for y in range(legend.top(), legend.bottom())
    }
    assert ORANGE in colours


def test_a_loss_under_one_is_numbered_as_it_is(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend([{"iter": i, "loss": 0.5 / i, "step_s": 0.01} for i in range(1, 200)])
    plots.redraw()
    assert "(x" not in plots.loss_plot.getAxis("left").labelString()  # not "loss (x0.001)", 0 to 500
    assert "(ms)" in plots.time_plot.getAxis("left").labelString()  # seconds still read as ms


def test_the_loss_of_a_uniform_guess_is_marked_on_the_loss_axis_linear_or_log(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    assert not plots.chance.isVisible()  # no run, no vocabulary
    store.extend(records(1, 101))
    plots.set_vocabulary(65)
    assert plots.chance.isVisible() and plots.chance.value() == pytest.approx(math.log(65))
    assert plots.chance.label.toPlainText() == "uniform guess: ln 65 = 4.17"
    plots.log_loss.setChecked(True)
    assert plots.chance.value() == pytest.approx(math.log10(math.log(65)))  # where the axis reads ln 65
    plots.log_loss.setChecked(False)
    assert plots.chance.value() == pytest.approx(math.log(65))
    plots.set_vocabulary(1)  # one character: any guess is right, there is no chance level to mark
    assert not plots.chance.isVisible()
    plots.set_vocabulary(96)
    plots.reset()  # a new run names its own vocabulary
    assert not plots.chance.isVisible()


def test_the_uniform_guess_label_stays_inside_the_plot_and_clear_of_the_legend(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    plots.set_vocabulary(65)  # ln 65 = 4.17
    view, legend = plots.loss_plot.getViewBox(), plots.loss_plot.legend
    for top in (4.3, 40.0):  # the line high in the view (a new model), then low (a diverging one)
        store.extend(
            [
                {"iter": i, "loss": 4.0 + (top - 4.0) * (i % 2), "step_s": 0.01}
                for i in range(len(store) + 1, len(store) + 201)
            ]
        )
        plots.redraw()
        qtbot.wait(50)
        label = plots.chance.label.sceneBoundingRect()
        assert view.sceneBoundingRect().contains(label), top
        assert not label.intersects(legend.sceneBoundingRect()), top


def test_the_uniform_guess_label_is_readable_over_a_loss_that_runs_along_it(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    plots.set_vocabulary(65)  # a random text: nothing to learn, the loss stays at the guess
    noise = np.random.default_rng(0).normal(0.0, 0.05, 400)
    store.extend([{"iter": i + 1, "loss": math.log(65) + noise[i], "step_s": 0.01} for i in range(400)])
    plots.redraw()
    qtbot.wait(50)
    label = plots.canvas.mapFromScene(plots.chance.label.sceneBoundingRect()).boundingRect()
    image = plots.canvas.grab().toImage()
    blue = [
        (x, y)
        for x in range(label.left() + 1, label.right() - 1)
        for y in range(label.top() + 1, label.bottom() - 1)
        if image.pixelColor(x, y).blue() - image.pixelColor(x, y).red() > 60
    ]
    assert not blue  # the curves pass behind the label's card, not through its text


def test_thread_marks_close_together_keep_their_labels_apart(qtbot):
    """Auto's first choice and a move soon after: one label was drawn over the other."""
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 20_001))
    plots.mark_threads(8, "Auto: 2 threads")
    plots.mark_threads(300, "Auto: 1 thread")
    plots.mark_threads(320, "Auto: 2 threads")
    plots.redraw()
    qtbot.wait(50)
    boxes = [line.label.sceneBoundingRect() for line in plots._thread_marks]
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    view = plots.time_plot.getViewBox().sceneBoundingRect()
    assert all(view.contains(box.topLeft()) for box in boxes)


def test_the_step_time_axis_fits_the_typical_steps_not_the_few_spikes(qtbot):
    """Fitted to its biggest spike (a resume, a comparison read), the step-time plot drew the
    run's 10 ms steps flat on its zero line for the rest of the run."""
    store = MetricsStore()
    plots = shown(qtbot, store)
    rng = np.random.default_rng(0)
    steps = 0.01 + 0.002 * rng.random(2000)
    steps[[300, 900, 1500]] = 0.6  # three spikes in 2,000 steps
    store.extend([{"iter": i + 1, "loss": 3.0, "step_s": float(t)} for i, t in enumerate(steps)])
    plots.redraw()
    plots.canvas.scene().prepareForPaint()  # where the ranges are fitted, before a paint
    top = plots.time_plot.getViewBox().viewRange()[1][1]
    assert 0.012 <= top < 0.05  # seconds: the typical steps fill the plot, the spikes run off it


def test_the_wheel_zooms_the_iterations_and_the_loss_axis_keeps_fitting_them(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 1001))  # loss 5.0 falling to 4.0
    plots.redraw()
    view = plots.loss_plot.getViewBox()
    box = view.sceneBoundingRect()  # the pointer in the plot's upper part, above the curve's end
    centre = plots.canvas.mapFromScene(QPointF(box.center().x(), box.top() + 0.15 * box.height()))
    for _ in range(3):
        wheel = QWheelEvent(
            QPointF(centre), QPointF(plots.canvas.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, 120),
            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
        )  # fmt: skip
        QApplication.sendEvent(plots.canvas.viewport(), wheel)
    plots.canvas.scene().prepareForPaint()  # where the ranges are fitted, before a paint
    (x0, x1), (y0, y1) = view.viewRange()
    assert x1 - x0 < 900 and not plots.following  # closer on the iterations
    visible = store["loss"][(store["iter"] >= x0) & (store["iter"] <= x1)]
    assert y0 <= visible.min() and visible.max() <= y1  # the curve in view, whatever was zoomed
    assert y1 - y0 < 2 * (visible.max() - visible.min())


def test_resident_memory_that_moves_by_kilobytes_is_drawn_on_whole_megabytes(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend([{"iter": i, "loss": 4.0, "rss": 159.23e6 + 3e3 * (i % 7)} for i in range(1, 60)])
    plots.redraw()
    qtbot.wait(50)
    low, high = plots.mem_plot.getAxis("right").range
    assert high - low >= RSS_MIN_RANGE_MB and low < 159.23 < 159.25 < high


def test_plots_emptied_for_a_new_run_keep_no_ranges_of_the_last(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 301, rss=200e6))
    plots.redraw()
    store.clear()  # a checkpoint without curves comes in
    plots.reset()
    plots.redraw()
    for view in [p.getViewBox() for p in plots.plots] + plots._right_views:
        lo, hi = view.viewRange()[1]
        assert lo == 0.0 and hi <= RSS_MIN_RANGE_MB  # not the last run's 3.5-6 loss, nor its 200 MB
    plots.set_vocabulary(65)  # the corpus of the next run: its loss starts near ln 65
    assert plots.loss_plot.viewRange()[1][1] > math.log(65) and plots.chance.isVisible()


def test_a_log_loss_axis_zoomed_within_a_decade_keeps_readable_ticks(qtbot):
    plots = shown(qtbot, MetricsStore())
    axis = plots.loss_plot.getAxis("left")
    axis.setLogMode(False, True)
    lo, hi = math.log10(2.3), math.log10(2.6)  # where a long run's loss spends its time
    levels = axis.tickValues(lo, hi, 200)
    values = [v for _, level in levels for v in level]
    assert values and all(lo - 1e-9 <= v <= hi + 1e-9 for v in values)  # pyqtgraph's own had none here
    labels = axis.tickStrings(values, 1.0, None)
    assert len(set(labels)) == len(labels) and "2.4" in labels  # not all "2"
    wide = [v for _, level in axis.tickValues(0.0, 2.0, 200) for v in level]
    assert 1.0 in wide  # across decades: pyqtgraph's powers of ten, as before


def test_the_readout_leaves_a_plot_with_the_mouse_even_after_a_late_move(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 301))
    plots.redraw()
    inside = plots.loss_plot.sceneBoundingRect().center()
    plots.canvas.scene().sigMouseMoved.emit(inside)  # handed on late, by a rate-limiting proxy
    QApplication.sendEvent(plots.canvas, QEvent(QEvent.Type.Leave))  # out before it is
    qtbot.wait(150)
    assert not any(line.isVisible() for line in plots.cursors)
    assert plots.hover_label.line.startswith("iter 300")


def test_a_new_run_brings_the_readout_back_under_a_resting_mouse(qtbot):
    store = MetricsStore()
    plots = shown(qtbot, store)
    store.extend(records(1, 101))
    plots.show_values_at(40)  # the mouse rests on a plot
    store.clear()
    plots.reset()  # F5
    store.extend(records(1, 21))
    plots.redraw()
    assert plots.hover_label.line.startswith("iter 20")  # it stayed blank until the mouse moved


def test_a_log_loss_axis_across_decades_writes_powers_of_ten(qtbot):
    plots = shown(qtbot, MetricsStore())
    axis = plots.loss_plot.getAxis("left")
    axis.setLogMode(False, True)
    values = [v for _, level in axis.tickValues(0.0, 3.0, 200) for v in level]
    assert "10³" in axis.tickStrings(values, 1.0, None)  # not "1e+03"


SCALED_IMAGE_CHECK = """
import json
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.metrics_store import MetricsStore
from app.plots import TrainingPlots
from tests.app.test_metrics_store import records
store = MetricsStore()
plots = TrainingPlots(store)
plots.resize(600, 400)
plots.show()
store.extend(records(1, 301))
plots.redraw()
app.processEvents()
plain = QImage.fromData(plots.image())
captioned = QImage.fromData(plots.image(caption="tiny · corpus.txt · iteration 300"))
top = captioned.height() - plain.height()
below = captioned.copy(0, top, plain.width(), plain.height()).convertToFormat(plain.format())
ratio = plots.canvas.grab().devicePixelRatio()
print(json.dumps({"ratio": ratio, "width": captioned.width() == plain.width(), "plots": below == plain}))
"""


def test_a_captioned_image_on_a_screen_at_200_percent_holds_the_whole_plots():
    """On a scaled screen the grab is in device pixels: the caption's page was not, and the
    plots filled its top-left quarter."""
    saved = run_qt_snippet(SCALED_IMAGE_CHECK, QT_QPA_PLATFORM="offscreen", QT_SCALE_FACTOR="2")
    assert saved == {"ratio": 2.0, "width": True, "plots": True}
