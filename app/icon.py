"""The application's icon, painted rather than shipped as a file: it then needs no package
data to install, and stays sharp at every size a desktop asks for."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QLinearGradient, QPainter, QPainterPath, QPen, QPixmap

SIZES = (16, 24, 32, 48, 64, 128, 256)
GRID = 64.0  # the drawing's units: a 64 x 64 square, scaled to each size


def app_icon() -> QIcon:
    """A falling loss curve, with validation points, on a blue tile."""
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(icon_pixmap(size))
    return icon


def icon_pixmap(size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(size / GRID, size / GRID)
    tile = QLinearGradient(0, 0, 0, GRID)
    tile.setColorAt(0, QColor(52, 124, 201))
    tile.setColorAt(1, QColor(22, 62, 122))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(tile))
    p.drawRoundedRect(QRectF(2, 2, 60, 60), 13, 13)
    # Thicker strokes at small sizes, where a thin line would blur into the tile.
    width = 6.5 if size <= 24 else 5.0
    curve = QPainterPath(QPointF(12, 13))
    curve.cubicTo(QPointF(18, 40), QPointF(28, 46), QPointF(52, 48))
    pen = QPen(QColor(255, 255, 255), width)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.setPen(pen)
    p.drawPath(curve)
    if size >= 32:  # below that, the points are noise
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(255, 160, 60))
        for x, y in ((24, 30), (36, 36), (48, 38.5)):  # above the curve, as validation runs
            p.drawEllipse(QPointF(x, y), 3.4, 3.4)
    p.end()
    return pixmap
