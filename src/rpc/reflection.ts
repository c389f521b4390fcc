import { type DescFile, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { ReflectionService } from '@grpc/reflection';
import type { Server } from '@grpc/grpc-js';

type ReflectionRoot = ConstructorParameters<typeof ReflectionService>[0];

/**
 * Server reflection (for grpcurl and `buf curl`) fed from the protobuf-es descriptors. Going
 * through @grpc/proto-loader instead would drop the imports of well-known types, so the
 * serialized FileDescriptorProtos are handed over directly, dependencies first.
 */
export function addReflection(server: Server, files: readonly DescFile[]): void {
  const ordered: DescFile[] = [];
  const visit = (file: DescFile) => {
    if (ordered.includes(file)) return;
    for (const dependency of file.dependencies) visit(dependency);
    ordered.push(file);
  };
  files.forEach(visit);
  const fileDescriptorProtos = ordered.map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  const root = { descriptors: { fileDescriptorProtos } } as unknown as ReflectionRoot;
  new ReflectionService(root).addToServer(server);
}
