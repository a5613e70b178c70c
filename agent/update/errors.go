package update

import "errors"

// ErrSlots means a model directory's slots cannot be read or changed.
var ErrSlots = errors.New("update: model slots")
