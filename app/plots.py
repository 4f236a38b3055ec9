"""Three live plots on one iteration axis: loss, seconds per iteration, memory.

Curves are created once; a 50 ms QTimer redraws them with ``setData`` on views of the
store's doubling buffers, and only when the store changed (at most 20 redraws a second,
however fast metrics arrive). Downsampling (auto, peak) and clip-to-view keep 10^5+ points
smooth; clip-to-view needs x auto-range off, so "following the newest point" sets the x range
itself, and any zoom or pan by the person stops following until they press "Follow newest".
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QBuffer, QEvent, QIODevice, QObject, QPointF, Qt, QTimer, Slot
from PySide6.QtGui import (
    QAction,
    QColor,
    QFontMetrics,
    QImageWriter,
    QPainter,
    QPaintEvent,
    QPalette,
    QPixmap,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.metrics_store import STEP_MEDIAN_WINDOW, MetricsStore
from app.readout import Readout

REDRAW_MS = 50  # 20 Hz at most
PLOT_SHARE = 0.05  # of the GUI thread for the plots; more slows training (small: 89 ms/iter at 15 %, 64 at 5)
SLOWEST_MS = 500  # but the plots never look frozen
MB = 1e6
RSS_MIN_RANGE_MB = 4.0
AXIS_WIDTH = 60  # px, left and right on every plot, so that the three line up
LEGEND_MIN_VIEW = 70  # px: a plot keeps its legend above it while its data has this height left
MARKER_Z = 10  # marker lines and their labels over the curves (z 0)
STEP_FIT = 0.98  # the share of the steps in view that the step-time axis fits

BLUE, ORANGE, GREEN, GREY = (31, 119, 180), (255, 127, 14), (44, 160, 44), (110, 110, 110)
PURPLE = (148, 103, 189)


def redraw_interval_ms(cost_s: float) -> int:
    """The wait between redraws that cost ``cost_s`` each, for them to take PLOT_SHARE."""
    return min(SLOWEST_MS, max(REDRAW_MS, round(1e3 * cost_s / PLOT_SHARE)))


class LossAxis(pg.AxisItem):  # type: ignore[misc]
    """The loss axis, which reads in log scale too when zoomed within a decade.

    pyqtgraph's log axis ticks the powers of ten and their multiples 2..9, labelled to one
    digit: between 2.3 and 2.6, where a loss spends most of a long run, it had no tick at all.
    Within a decade the ticks are those of a linear axis over the same values, placed in log."""

    _within_decade = False  # set by the last logTickValues, for logTickStrings

    def logTickValues(self, minVal: float, maxVal: float, size: float, stdTicks: Any) -> Any:
        self._within_decade = maxVal - minVal < 1.0
        if not self._within_decade:
            return super().logTickValues(minVal, maxVal, size, stdTicks)
        lo, hi = 10.0**minVal, 10.0**maxVal
        levels, seen = [], np.array([])
        for spacing, offset in self.tickSpacing(lo, hi, size):
            start = math.ceil((lo - offset) / spacing) * spacing + offset
            values = np.arange(start, hi + spacing * 1e-9, spacing)
            values = values[(values > 0) & ~np.isclose(values[:, None], seen).any(axis=1)]  # once each
            seen = np.concatenate([seen, values])
            levels.append((None, list(np.log10(values))))
        return levels

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if not self._within_decade:  # powers of ten, as pyqtgraph writes them (10³)
            return list(super().logTickStrings(values, scale, spacing))
        # to three figures: "%0.1g", pyqtgraph's, made 2.3 and 2.4 both "2"
        return [f"{x:.3g}" for x in 10 ** np.asarray(values, dtype=float) * scale]


def _pen(rgb: tuple[int, int, int], alpha: int = 255) -> pg.QtGui.QPen:
    pen = pg.mkPen((*rgb, alpha), width=1)  # cosmetic 1 px: wider lines are slow without OpenGL
    pen.setCosmetic(True)
    return pen


class _TimedCanvas(pg.GraphicsLayoutWidget):  # type: ignore[misc]
    """The plots' canvas, adding up the time its repaints take."""

    paint_s = 0.0  # since the owner last took it

    def paintEvent(self, event: QPaintEvent) -> None:
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.paint_s += time.perf_counter() - t0

    def take_paint_s(self) -> float:
        spent, self.paint_s = self.paint_s, 0.0
        return spent


def image_formats() -> list[str]:
    """The image formats Qt writes here, by their file suffix ("png", "jpg", …)."""
    return sorted(f.toStdString().lower() for f in QImageWriter.supportedImageFormats())


def _name_fits(axis: pg.AxisItem, name: str, room: float) -> bool:
    """Whether ``name`` with the axis's unit fits in ``room`` pixels as drawn: with the text's
    margins, and the widest prefix the unit may come to take (seconds turn to "ms" with the
    first step times, and nothing refits the name then)."""
    drawn = f"{name} ({'m' if axis.autoSIPrefix else ''}{axis.labelUnits})"
    length = QFontMetrics(axis.label.font()).horizontalAdvance(drawn)
    return bool(length + 2 * axis.label.document().documentMargin() <= room)


class TrainingPlots(QWidget):
    """Loss (raw, smoothed, validation), time per iteration and memory (arena in use, reserved, RSS)."""

    def __init__(self, store: MetricsStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.following = True
        self._drawn_version = -1
        self._redraw_s: float | None = None  # running average of what a redraw costs
        self.reference: MetricsStore | None = None  # another run's metrics, to compare with
        self.loss_reference: pg.PlotDataItem | None = None  # its smoothed loss
        self.context_menu = QMenu(self)  # a right click on a plot (set_context_actions)
        self._thread_marks: list[pg.InfiniteLine] = []  # mark_threads
        self._ink = QColor(128, 128, 128)  # _follow_palette's
        self._card = QColor(255, 255, 255, 200)  # and the background under marker labels

        self.log_loss = QCheckBox("Log scale")
        self.log_loss.setToolTip("Show the loss on a logarithmic axis")
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        # The window is centred, so odd: the slider picks how many iterations it reaches on
        # each side, and each of its positions is another window (a window of 50 was 51).
        self.smoothing.setRange(0, 250)
        self.smoothing.setValue(25)
        self.smoothing.setMaximumWidth(180)
        self.smoothing.setToolTip("Window of the smoothed loss, in iterations, centred on each")
        self.smoothing_label = QLabel()
        self.follow_button = QPushButton("Follow newest")
        self.follow_button.setToolTip("Return to following the newest iteration")
        self.follow_button.setVisible(False)
        # The newest iteration's values, live; those under the mouse while it is over a plot.
        self.hover_label = Readout()
        self._hovering = False

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.smoothing_label)
        bar.addSpacing(12)
        bar.addWidget(self.log_loss)
        bar.addStretch(1)
        bar.addWidget(self.follow_button)

        self.canvas = _TimedCanvas()
        self.canvas.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # no key does anything there: Tab passes it
        self.loss_plot = self._add_plot(0, "loss", None, LossAxis("left"))
        self.time_plot = self._add_plot(1, "step time", "s")
        # Its axis fits all but the outermost 1 % of the steps in view at either end: fitted to
        # every spike (a resume, a comparison read), the typical step lay flat on the zero line
        # for the rest of the run. A spike runs off the top instead.
        self.time_plot.enableAutoRange(y=STEP_FIT)
        self.mem_plot = self._add_plot(2, "arena", "MB")
        self.mem_plot.setLabel("bottom", "iteration")
        self.plots = (self.loss_plot, self.time_plot, self.mem_plot)
        self._right_views: list[pg.ViewBox] = []
        for p in self.plots[1:]:
            p.setXLink(self.loss_plot)
        for p in self.plots[:-1]:  # one shared iteration scale, numbered under the lowest plot
            p.getAxis("bottom").setStyle(showValues=False)

        self.loss_raw = self.loss_plot.plot(pen=_pen(BLUE, 70), name="loss")
        self.loss_smooth = self.loss_plot.plot(pen=_pen(BLUE), name="smoothed")
        self.loss_val = self.loss_plot.plot(
            pen=None, symbol="o", symbolSize=6, symbolBrush=ORANGE, symbolPen=None, name="validation"
        )
        # The legend draws the scatter's own style, which pyqtgraph sets from these options only
        # with the first point: until the first validation, the marker was its default blue-grey.
        self.loss_val.scatter.setBrush(ORANGE)
        self.loss_val.scatter.setPen(None)
        self.loss_val.scatter.setSize(6)
        # unit on the axis; the median is what an iteration costs, the spikes what disturbed it.
        # Named as the axis is, which a short plot gives its unit alone.
        self.step_time = self.time_plot.plot(pen=_pen(GREEN, 90), name="step time")
        self.step_median = self.time_plot.plot(pen=_pen(GREEN), name=f"median of {STEP_MEDIAN_WINDOW}")
        self.mem_in_use = self.mem_plot.plot(pen=_pen(BLUE), name="arena in use")
        self.mem_reserved = self.mem_plot.plot(pen=_pen(ORANGE), name="arena reserved")
        self.mem_rss = self._add_right_curve(self.mem_plot, "RSS", "MB", _pen(GREY))  # see _follow_palette
        # (axis, name): a name longer than its plot is tall overran the next plot's (a 600 px
        # screen, or 768 px at 125 % scale); there the unit alone stays, and the legends (while
        # there is room for them) and the line under the plots name the values
        self._named_axes = [
            (plot.getAxis(side), plot.getAxis(side).labelText, plot.getViewBox())
            for plot in self.plots
            for side in ("left", "right")
            if plot.getAxis(side).labelUnits
        ]
        for plot in self.plots:
            plot.getViewBox().sigResized.connect(self._fit_axis_names)
            plot.getViewBox().sigResized.connect(self._fit_legends)
        # What a model that has learned nothing scores: each character of the vocabulary equally
        # likely, a loss of ln(vocabulary). A new model starts there; the gap below it is learning.
        # Its label sits under the line near the left, or over it when the line is low in the
        # view, so that it is never cut off at the plot's edge.
        self.chance = pg.InfiniteLine(angle=0, movable=False, label=" ", labelOpts={"position": 0.3})
        self.chance_loss: float | None = None
        self.loss_plot.addItem(self.chance, ignoreBounds=True)
        self.chance.setVisible(False)
        self.cursors = [pg.InfiniteLine(angle=90, movable=False, pen=_pen(GREY, 120)) for _ in self.plots]
        for plot, line in zip(self.plots, self.cursors, strict=True):
            plot.addItem(line, ignoreBounds=True)
            line.setVisible(False)
        self._follow_palette()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.hover_label)

        self._mouse = pg.SignalProxy(self.canvas.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse)
        self.canvas.installEventFilter(self)  # the mouse leaving the plots: back to the newest
        self.smoothing.valueChanged.connect(self._on_smoothing)
        self.log_loss.toggled.connect(self._on_log)
        self.follow_button.clicked.connect(self.follow)
        self._on_smoothing(self.smoothing.value())

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def _add_plot(
        self, row: int, label: str, units: str | None, left: pg.AxisItem | None = None
    ) -> pg.PlotItem:
        plot = self.canvas.addPlot(row=row, col=0, axisItems={"left": left} if left is not None else None)
        plot.setLabel("left", label, units=units)
        # No grid: pyqtgraph draws it as translucent lines across the whole view inside the axes'
        # pictures, which made a full repaint 120 ms instead of 14 ms in software rendering and
        # held the GIL long enough to slow training itself. Hover reads values exactly instead.
        plot.setDownsampling(auto=True, mode="peak")  # without auto=True it stays off
        plot.setClipToView(True)  # only works with x auto-range off: see follow()
        plot.enableAutoRange(x=False, y=True)
        plot.setAutoVisible(y=True)  # y fits what is visible, not the whole history
        # The wheel and a drag move along the iterations only: zooming y too turned its fit off,
        # and three clicks of the wheel could leave the curve above or below the view.
        plot.setMouseEnabled(x=True, y=False)
        plot.hideButtons()
        # in one row: stacked, three entries took a short plot's whole height (a 600 px screen)
        # Above the data, in the title's row (see _fit_legends): inside the plot, it hid the newest
        # data, where the lines end, under its corner
        legend = pg.LegendItem(offset=(-AXIS_WIDTH, 1), labelTextSize="8pt", colCount=3)
        legend.layout.setContentsMargins(0, 0, 0, 0)
        legend.setParentItem(plot)
        legend.setVisible(False)
        plot.legend = legend
        plot.getAxis("left").setWidth(AXIS_WIDTH)  # the three plots' axes line up
        for side in ("left", "bottom", "right"):
            # Two levels of ticks, not three: the third drew most of the lines, and computing and
            # drawing ticks was most of a repaint (16 -> 10 ms for the three plots).
            plot.getAxis(side).setStyle(maxTickLevel=1)
        if units != "s":  # seconds read best as ms; "kMB" would not, nor a loss under 1 "(x0.001)"
            plot.getAxis("left").enableAutoSIPrefix(False)
        plot.getViewBox().sigRangeChangedManually.connect(self._on_manual_range)
        plot.getViewBox().raiseContextMenu = self._raise_menu  # see set_context_actions
        return plot

    def _add_right_curve(self, plot: pg.PlotItem, name: str, units: str, pen: Any) -> pg.PlotDataItem:
        """A curve on its own y axis at the right: RSS is ten times the arena, and would flatten it."""
        view = pg.ViewBox()
        plot.scene().addItem(view)
        view.setZValue(plot.zValue() - 1)  # under the plot's own view and curves
        plot.showAxis("right")
        plot.getAxis("right").linkToView(view)
        plot.getAxis("right").setLabel(name, units=units)
        plot.getAxis("right").enableAutoSIPrefix(False)
        for p in self.plots:  # the same right axis width on all three keeps the x axes aligned
            p.showAxis("right")
            p.getAxis("right").setWidth(AXIS_WIDTH)
            if p is not plot:
                p.getAxis("right").setStyle(showValues=False)
        view.setXLink(plot)
        view.raiseContextMenu = self._raise_menu
        view.enableAutoRange(y=True)
        view.setAutoVisible(y=True)
        # Resident memory moves by kilobytes early in a run: ticks a few kB apart were numbered
        # "159.245" and ran into the axis name. A few MB at least keeps whole numbers.
        view.setLimits(minYRange=RSS_MIN_RANGE_MB)

        def fit() -> None:
            view.setGeometry(plot.getViewBox().sceneBoundingRect())

        plot.getViewBox().sigResized.connect(fit)
        curve = pg.PlotDataItem(pen=pen, name=f"{name} (right axis)")
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)
        view.addItem(curve)
        plot.legend.addItem(curve, curve.name())
        self._right_views.append(view)
        return curve

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # the desktop went dark, or light
            self._follow_palette()

    def _follow_palette(self) -> None:
        """Plots in the window's colours: on a dark desktop, a white card glared. The axes, the
        legends' text and RSS are drawn in ink halfway from the text colour to the background."""
        palette = self.palette()
        base, text = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)
        ink = QColor(
            round(0.45 * text.red() + 0.55 * base.red()),
            round(0.45 * text.green() + 0.55 * base.green()),
            round(0.45 * text.blue() + 0.55 * base.blue()),
        )
        self.canvas.setBackground(base)
        self._ink = ink
        self._card = QColor(base.red(), base.green(), base.blue(), 200)
        for line in (self.chance, *self._thread_marks):
            self._dash(line)
        for plot in self.plots:
            for side in ("left", "bottom", "right"):
                plot.getAxis(side).setPen(ink)
                plot.getAxis(side).setTextPen(ink)
            plot.legend.setLabelTextColor(ink)
        self.mem_rss.setPen(_pen((ink.red(), ink.green(), ink.blue())))

    def _dash(self, line: pg.InfiniteLine) -> None:
        """A marker line (the uniform guess, a thread change) dashed, in the axes' ink, over the
        curves, its label on a card of the background: a random text's loss runs along the
        guess, and the label was lost in its noise."""
        line.setPen(pg.mkPen(self._ink, style=Qt.PenStyle.DashLine))
        line.setZValue(MARKER_Z)
        line.label.setColor(self._ink)
        line.label.fill = pg.mkBrush(self._card)
        line.label.update()

    @Slot()
    def _fit_legends(self) -> None:
        """Make a row above each plot as tall as its legend, while every plot can spare it: in a
        short window the legends give way to the data (all three, rather than the lowest plot's
        alone, which its axis makes the shortest), and the line under the plots still says what
        each value is."""
        rows = [plot.layout.rowMaximumHeight(0) for plot in self.plots]
        needs = [math.ceil(plot.legend.height()) + 1 for plot in self.plots]  # a pixel clear of the data
        # and as wide as its plot: a run to compare has a long name, and in a narrow window the
        # legend ran off the plot's left edge (LegendItem cannot reliably take fewer columns)
        room = all(
            plot.getViewBox().height() + row >= need + LEGEND_MIN_VIEW
            and plot.legend.width() <= plot.getViewBox().width()
            for plot, row, need in zip(self.plots, rows, needs, strict=True)
        )
        for plot, row, need in zip(self.plots, rows, needs, strict=True):
            if row != (need if room else 0):
                plot.layout.setRowFixedHeight(0, need if room else 0)
                plot.legend.setVisible(room)

    @Slot()
    def _fit_axis_names(self) -> None:
        """Name each axis in full where its plot is tall enough for it, else by its last word
        ("time (ms)", on a laptop's screen), else give the unit alone."""
        for axis, name, view in self._named_axes:
            words = (name, name.split()[-1])
            want = next((w for w in words if _name_fits(axis, w, view.height())), "")
            if axis.labelText != want:
                axis.setLabel(want, units=axis.labelUnits)

    # -- redraw ---------------------------------------------------------------------------
    @Slot()
    def redraw(self) -> None:
        """Push the store's columns into the curves, if anything changed since last time."""
        if self.store.version == self._drawn_version:
            return
        self._drawn_version = self.store.version
        t0 = time.perf_counter()
        s = self.store
        it = s["iter"]
        self.loss_raw.setData(it, s["loss"], connect="finite")
        self.loss_smooth.setData(it, s.smoothed_loss(self.smoothing_window()), connect="finite")
        self.loss_val.setData(s.val_iter.view(), s.val_loss.view())
        self.step_time.setData(it, s["step_s"], connect="finite")
        self.step_median.setData(it, s.step_median.view(), connect="finite")
        self.mem_in_use.setData(it, s["arena_in_use"] / MB, connect="finite")
        self.mem_reserved.setData(it, s["arena_reserved"] / MB, connect="finite")
        self.mem_rss.setData(it, s["rss"] / MB, connect="finite")
        if self.following:
            self._show_all()
        if not self._hovering:
            self.show_latest()
        # pyqtgraph fits the ranges to the new data lazily, at the start of a paint, and the axes
        # that this changes then ask for a second paint: fitting them now makes it one.
        self.canvas.scene().prepareForPaint()
        # Redrawing runs Python (pyqtgraph) on the GUI thread, which competes with the worker for
        # the GIL and, on a machine whose cores all train, for a core. Its cost (this call and the
        # repaints since the last) sets how often to redraw: when it is slow (software rendering,
        # a big window), the plots redraw less often rather than slow the training down.
        cost = time.perf_counter() - t0 + self.canvas.take_paint_s()
        self._redraw_s = cost if self._redraw_s is None else 0.8 * self._redraw_s + 0.2 * cost
        self.timer.setInterval(redraw_interval_ms(self._redraw_s))

    def _show_all(self) -> None:
        it = self.store["iter"]
        if not len(it) and self.reference is not None:  # no run of its own: the one compared with
            it = self.reference["iter"]
        lo, hi = (float(it[0]), float(it[-1])) if len(it) else (0.0, 1.0)
        self.loss_plot.setXRange(lo, max(hi, lo + 1), padding=0.02)
        views = [p.getViewBox() for p in self.plots] + self._right_views
        for v in views:
            if not len(it):  # nothing to fit to: the last run's ranges would stay
                v.setYRange(0.0, self._empty_top(v), padding=0.0)
            v.enableAutoRange(y=STEP_FIT if v is self.time_plot.getViewBox() else True)

    def _empty_top(self, view: pg.ViewBox) -> float:
        """The top of an empty plot: the loss's reaches above the uniform guess, where a new model
        starts; resident memory's spans its least range, and does not go below zero."""
        if (
            view is self.loss_plot.getViewBox()
            and self.chance_loss is not None
            and not self.log_loss.isChecked()
        ):
            return 1.2 * self.chance_loss
        return RSS_MIN_RANGE_MB if view in self._right_views else 1.0

    @Slot()
    def follow(self) -> None:
        """Follow the newest iteration again (after a zoom or pan)."""
        self.following = True
        self.follow_button.setVisible(False)
        self._show_all()
        self.show_latest()  # the readout too, though the mouse rests where it hovered

    @Slot(object)
    def _on_manual_range(self, _mask: object) -> None:
        self.following = False
        self.follow_button.setVisible(True)

    # -- comparison ---------------------------------------------------------------------------
    def set_reference(self, name: str, store: MetricsStore) -> None:
        """Draw another run's smoothed loss, named ``name`` in the legend, with this one's until
        cleared: does a bigger model, or another learning rate, learn faster?"""
        self.clear_reference()
        self.reference = store
        # the legend reads names as HTML; a folder's name is text
        self.loss_reference = self.loss_plot.plot(pen=_pen(PURPLE, 200), name=html.escape(name))
        self._draw_reference()
        self._fit_legends()  # a row of entries more, or a longer one
        if self.following:
            self._show_all()

    def clear_reference(self) -> None:
        if self.loss_reference is not None:
            self.loss_plot.removeItem(self.loss_reference)
            self.loss_plot.legend.removeItem(self.loss_reference)
        self.reference = self.loss_reference = None
        self._fit_legends()
        if self.following:
            self._show_all()

    def _draw_reference(self) -> None:
        """Set when it is chosen and when the smoothing changes, not at every redraw: it is
        fixed, and redraws are budgeted."""
        if self.reference is not None and self.loss_reference is not None:
            smooth = self.reference.smoothed_loss(self.smoothing_window())
            self.loss_reference.setData(self.reference["iter"], smooth, connect="finite")

    def mark_threads(self, iteration: float, label: str) -> None:
        """A dashed line on the step-time plot where the thread count changed, named by the new
        one: what a second thread costs or saves shows on either side of it. Each label a step
        lower than the one before, round three heights: Auto's first choice and a move soon after
        it had their labels one over the other."""
        line = pg.InfiniteLine(
            pos=iteration,
            angle=90,
            movable=False,
            label=label,
            labelOpts={"position": 0.9 - 0.3 * (len(self._thread_marks) % 3), "anchors": [(0, 0), (0, 0)]},
        )
        self._dash(line)
        self.time_plot.addItem(line, ignoreBounds=True)
        self._thread_marks.append(line)

    def reset(self) -> None:
        """Forget the view state for a new run (the store is cleared by its owner; a run to
        compare with stays)."""
        self._drawn_version = -1
        for line in self._thread_marks:
            self.time_plot.removeItem(line)
        self._thread_marks.clear()
        self.follow()  # the readout too: it follows the new run until the mouse moves
        self.hover_label.set_parts([])  # (the store may not be cleared yet)
        self.set_vocabulary(None)

    # -- saving -----------------------------------------------------------------------------
    def image(self, fmt: str = "PNG", caption: str = "") -> bytes:
        """The three plots as they are shown, without the hover line, as an image file's bytes
        in ``fmt`` (a format Qt writes: PNG, JPG, BMP…), under a line of ``caption`` if given:
        on a slide or in a report, the picture says what run it shows."""
        shown = [line.isVisible() for line in self.cursors]
        for line in self.cursors:
            line.setVisible(False)
        try:
            pixmap = self.canvas.grab()
        finally:
            for line, visible in zip(self.cursors, shown, strict=True):
                line.setVisible(visible)
        if caption:
            pixmap = self._captioned(pixmap, caption)
        buffer = QBuffer()
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not pixmap.save(buffer, fmt):
            raise ValueError(f"Qt cannot write {fmt} images here")
        return bytes(buffer.data().data())

    def _captioned(self, plots: QPixmap, caption: str) -> QPixmap:
        metrics = QFontMetrics(self.font())
        top = 2 * metrics.height()
        # in device pixels, as the grab is: on a screen at 200 % the plots filled a quarter
        ratio = plots.devicePixelRatio()
        out = QPixmap(plots.width(), plots.height() + round(top * ratio))
        out.setDevicePixelRatio(ratio)
        palette = self.palette()
        out.fill(palette.color(QPalette.ColorRole.Base))
        painter = QPainter(out)
        try:
            painter.setFont(self.font())
            painter.setPen(palette.color(QPalette.ColorRole.Text))
            room = round(plots.width() / ratio) - 2 * metrics.averageCharWidth()  # in logical pixels
            text = metrics.elidedText(caption, Qt.TextElideMode.ElideMiddle, room)
            painter.drawText(metrics.averageCharWidth(), round(1.4 * metrics.height()), text)
            painter.drawPixmap(0, top, plots)
        finally:
            painter.end()
        return out

    def set_context_actions(self, actions: list[QAction]) -> None:
        """What a right click on a plot offers: the window's own actions, in place of pyqtgraph's
        menu. Its Export… dialog mostly ended in a traceback (SVG with PySide6 6.11, pyqtgraph
        issue 3485; Matplotlib, which is not installed), and its view and plot options could
        zoom the loss axis out of its fit, or turn the loss curve into its Fourier spectrum."""
        self.context_menu.clear()
        self.context_menu.addActions(actions)

    def _raise_menu(self, event: Any) -> None:
        """A view box's right click (pyqtgraph's ViewBox.raiseContextMenu, replaced)."""
        if self.context_menu.actions():
            self.context_menu.popup(event.screenPos().toPoint())

    # -- controls ---------------------------------------------------------------------------
    def smoothing_window(self) -> int:
        """The iterations the smoothed loss averages, as the slider sets them."""
        return 2 * self.smoothing.value() + 1

    @Slot(int)
    def _on_smoothing(self, _reach: int) -> None:
        self.smoothing_label.setText(f"{self.smoothing_window()} it")
        self._drawn_version = -1
        self._draw_reference()

    @Slot(bool)
    def _on_log(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self._place_chance()
        self._drawn_version = -1

    def set_vocabulary(self, size: int | None) -> None:
        """Mark the loss of a uniform guess over ``size`` characters on the loss plot (None,
        or a vocabulary of one, which any guess gets right: no mark)."""
        loss = self.chance_loss = math.log(size) if size is not None and size > 1 else None
        if loss is not None:
            self.chance.label.setFormat(f"uniform guess: ln {size} = {loss:.2f}")
        self._place_chance()
        if not len(self.store) and self.following:
            self._show_all()  # an empty loss plot reaches up to the line

    def _place_chance(self) -> None:
        # an InfiniteLine does not follow the plot's log mode: its position is in view coordinates
        loss = self.chance_loss
        self.chance.setVisible(loss is not None)
        if loss is not None:
            self.chance.setPos(math.log10(loss) if self.log_loss.isChecked() else loss)
            self.chance.label.valueChanged()  # its text follows the format only while it is shown

    # -- hover ----------------------------------------------------------------------------
    def _on_mouse(self, event: tuple[QPointF]) -> None:
        pos = event[0]
        for plot in self.plots:
            if plot.sceneBoundingRect().contains(pos):
                x = plot.getViewBox().mapSceneToView(pos).x()
                self.show_values_at(x)
                return
        self.show_latest()  # between the plots, or over an axis

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.canvas and event.type() == QEvent.Type.Leave:
            # The proxy hands mouse moves on late, from a timer: one still held would come after
            # this and put the readout back on a point the mouse has left.
            self._mouse.timer.stop()
            self._mouse.args = None
            self.show_latest()
        return False

    def show_latest(self) -> None:
        """Show the newest iteration's values, without a cursor: the readout of a run as it goes."""
        self._hovering = False
        for line in self.cursors:
            line.setVisible(False)
        if not len(self.store):
            self.hover_label.set_parts([])
            return
        self._show_values(len(self.store) - 1)

    def show_values_at(self, x: float) -> None:
        """Show the values of the iteration nearest to ``x`` under the plots, with a cursor."""
        i = self.store.index_at(x)
        if i is None:
            return
        self._hovering = True
        for line in self.cursors:
            line.setPos(float(self.store["iter"][i]))
            line.setVisible(True)
        self._show_values(i)

    def _show_values(self, i: int) -> None:
        s = self.store
        it = float(s["iter"][i])
        parts = [f"iter {it:.0f}", f"loss {s['loss'][i]:.4f}"]
        # the newest half window has no smoothed value yet: the latest there is, and where it is
        window = self.smoothing_window()
        si = min(i, len(s) - 1 - window // 2)
        smooth = s.smoothed_at(si, window) if si >= 0 else math.nan
        if math.isfinite(smooth):
            at = float(s["iter"][si])
            parts.append(f"smoothed {smooth:.4f}" + ("" if si == i else f" (at {at:.0f})"))
        # the latest validation up to here: one iteration in thousands is hard to hover onto
        vi = int(np.searchsorted(s.val_iter.view(), it, side="right")) - 1
        if vi >= 0:
            at = s.val_iter.view()[vi]
            parts.append(f"val {s.val_loss.view()[vi]:.4f}" + ("" if at == it else f" (at {at:.0f})"))
        # the schedule and the gradient, which have no curve of their own: warmup, decay, and a
        # stretched schedule after Continue show here
        lr, grad = s["lr"][i], s["grad_norm"][i]
        parts += [f"lr {lr:.3g}"] if math.isfinite(lr) else []
        parts += [f"grad norm {grad:.3g}"] if math.isfinite(grad) else []
        parts.append(f"{1e3 * s['step_s'][i]:.1f} ms/iter")
        typical = s.step_median.view()[i]
        if math.isfinite(typical):
            parts[-1] += f" (median {1e3 * typical:.1f})"
        in_use, reserved, rss = (s[name][i] / MB for name in ("arena_in_use", "arena_reserved", "rss"))
        if math.isfinite(in_use) and math.isfinite(reserved):
            parts.append(f"arena {in_use:.1f} of {reserved:.1f} MB")
        if math.isfinite(rss):
            parts.append(f"RSS {rss:.0f} MB")
        self.hover_label.set_parts(parts)
