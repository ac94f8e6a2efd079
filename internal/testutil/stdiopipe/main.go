// stdiopipe connects its stdin and stdout to a TCP address. qemu's
// user-mode network runs it for each guest connection to a guestfwd address
// (guestfwd=tcp:IP:PORT-cmd:stdiopipe HOST:PORT), which lets a VM with a
// restricted network reach one loopback service of the host.
package main

import (
	"io"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: stdiopipe HOST:PORT\n")
		os.Exit(2)
	}
	c, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
}
