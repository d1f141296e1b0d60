// Command coredns is CoreDNS v1.15.0 with only the plugins the local cluster uses: cluster DNS
// for Services and pods (kubernetes), bound to 127.0.0.1 (bind), with a readiness endpoint
// (ready), error and query logs, and a cache. A smaller plugin set builds in a fraction of the
// time of the full binary.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the plugin order, a subset of CoreDNS's plugin.cfg in the same relative order.
var directives = []string{
	"bind",
	"ready",
	"errors",
	"log",
	"cache",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
