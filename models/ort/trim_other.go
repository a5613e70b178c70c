//go:build cgo && !linux

package ort

func releaseCode(string) int64 { return 0 }
