// Command kubectl is kubectl v1.36.3, built from the published k8s.io/kubectl module with the
// same main as k8s.io/kubernetes/cmd/kubectl. The local cluster ships it so that tests and the
// demo never depend on a kubectl installed on the machine (the kubectl-plugin test runs
// `kubectl everynode ...` with it).
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Client auth plugins (exec, OIDC), as in the upstream binary.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		// Pretty-print the error and exit with an error.
		util.CheckErr(err)
	}
}
