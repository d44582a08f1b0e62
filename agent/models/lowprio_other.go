//go:build !linux

package models

func lowPriority(fn func()) { fn() }
