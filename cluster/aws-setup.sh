#!/usr/bin/env bash
# Once per AWS account and region, before the first `ray up cluster/aws.yaml`: what the cluster
# file names but should not create itself. Safe to run again. Needs the AWS CLI, logged in as
# someone who may create buckets, security groups and IAM roles.
#
#   bash cluster/aws-setup.sh            # region: $AWS_REGION, else us-east-1 (as in aws.yaml)
#
# Creates:
#   s3://mri-sr-<account>           data (--data s3://mri-sr-<account>/data/), Ray results and
#                                   checkpoints (ray/), MLflow artifacts (mlflow/); private, encrypted
#   security group mri-sr-cluster   SSH from this machine's public address only; every port
#                                   between the cluster's own nodes; nothing else
#   instance profile mri-sr-worker  read/write that bucket, nothing more
#   instance profile mri-sr-head    the same, plus starting, tagging and stopping EC2 instances
#                                   (the autoscaler) and handing mri-sr-worker to them
set -euo pipefail

REGION=${AWS_REGION:-us-east-1}
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
BUCKET=mri-sr-$ACCOUNT
MY_IP=$(curl -fsS https://checkip.amazonaws.com | tr -d '[:space:]')
export AWS_DEFAULT_REGION=$REGION

echo "bucket s3://$BUCKET"
if ! aws s3api head-bucket --bucket "$BUCKET" 2>/dev/null; then
  if [ "$REGION" = us-east-1 ]; then
    aws s3api create-bucket --bucket "$BUCKET"
  else
    aws s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration "LocationConstraint=$REGION"
  fi
fi
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'

echo "security group mri-sr-cluster: SSH from $MY_IP/32 only"
VPC=$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)
SG=$(aws ec2 describe-security-groups --filters Name=group-name,Values=mri-sr-cluster Name=vpc-id,Values="$VPC" \
  --query 'SecurityGroups[0].GroupId' --output text)
if [ "$SG" = None ]; then
  SG=$(aws ec2 create-security-group --group-name mri-sr-cluster --vpc-id "$VPC" \
    --description "mri-sr Ray cluster: SSH from the owner, all ports between members" --query GroupId --output text)
  aws ec2 authorize-security-group-ingress --group-id "$SG" \
    --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]"
fi
aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 22 --cidr "$MY_IP/32" 2>/dev/null \
  || echo "  (SSH from $MY_IP/32 already allowed)"

TRUST='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
S3_POLICY=$(cat <<JSON
{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":["s3:ListBucket","s3:GetBucketLocation"],"Resource":"arn:aws:s3:::$BUCKET"},
  {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload"],
   "Resource":"arn:aws:s3:::$BUCKET/*"}]}
JSON
)
AUTOSCALER_POLICY=$(cat <<JSON
{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":["ec2:RunInstances","ec2:CreateTags","ec2:StartInstances","ec2:StopInstances",
   "ec2:TerminateInstances","ec2:Describe*"],"Resource":"*"},
  {"Effect":"Allow","Action":["iam:PassRole","iam:GetInstanceProfile"],
   "Resource":["arn:aws:iam::$ACCOUNT:role/mri-sr-worker","arn:aws:iam::$ACCOUNT:instance-profile/mri-sr-worker"]}]}
JSON
)

profile() {  # profile NAME POLICY...: a role with these inline policies, in an instance profile of the same name
  local name=$1; shift
  echo "instance profile $name"
  aws iam get-role --role-name "$name" >/dev/null 2>&1 \
    || aws iam create-role --role-name "$name" --assume-role-policy-document "$TRUST" >/dev/null
  local i=0
  for policy in "$@"; do
    aws iam put-role-policy --role-name "$name" --policy-name "$name-$i" --policy-document "$policy"
    i=$((i + 1))
  done
  if ! aws iam get-instance-profile --instance-profile-name "$name" >/dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
  fi
}
profile mri-sr-worker "$S3_POLICY"
profile mri-sr-head "$S3_POLICY" "$AUTOSCALER_POLICY"

echo "done: ray up cluster/aws.yaml  (data goes to s3://$BUCKET/data/)"
