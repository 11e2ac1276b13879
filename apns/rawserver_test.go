package apns_test

import (
	"net"
	"sync"
	"testing"
)

// serveRaw accepts connections on ln until the test ends and runs handle for
// each in its own goroutine, with the connection's serial number (from 1).
// Cleanup closes ln and waits for every handler; handle closes c.
func serveRaw(t *testing.T, ln net.Listener, handle func(serial int, c net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for serial := 1; ; serial++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(serial, c)
			}()
		}
	}()
}
