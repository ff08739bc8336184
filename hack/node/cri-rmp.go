// cri-rmp: stop and remove every pod sandbox on a CRI runtime (the equivalent
// of `crictl rmp --all --force`, which is not on the Go module proxy here), so
// the runtime tears down pod networking (CNI DEL) and exits the shims.
//
//	cri-rmp unix:///path/to/containerd.sock [list]
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cri-rmp unix:///path/to.sock [list]")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	c := runtime.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list, err := c.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "list pod sandboxes:", err)
		os.Exit(1)
	}
	failed := false
	for _, p := range list.Items {
		name := p.Metadata.Namespace + "/" + p.Metadata.Name
		if len(os.Args) > 2 && os.Args[2] == "list" {
			fmt.Printf("%s %s %s\n", p.Id[:13], p.State, name)
			continue
		}
		if _, err := c.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintln(os.Stderr, "stop", name, err)
			failed = true
			continue
		}
		if _, err := c.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintln(os.Stderr, "remove", name, err)
			failed = true
			continue
		}
		fmt.Println("removed pod sandbox", name)
	}
	if failed {
		os.Exit(1)
	}
}
